/**
 * Reading GGUF files: the header, metadata and tensor infos (never the tensor data), checks
 * that tell whether llama.cpp can load a model without crashing, and a cheap fingerprint.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { open, stat } from "node:fs/promises";
import { alignUp, GGML_MAX_DIMS, GGML_TYPE_TRAITS, GGUF_DEFAULT_ALIGNMENT, GgufError, GgufErrorCode, GgufValueType } from "./format.ts";

/** A metadata value: numbers (64-bit integers beyond 2^53 as `bigint`), strings, booleans, arrays. */
export type GgufValue = number | bigint | string | boolean | GgufValue[];

/** The stored type of a metadata value. */
export interface GgufValueTypeInfo {
  readonly type: GgufValueType;
  /** Element type, for arrays. */
  readonly itemType?: GgufValueType;
}

/** One tensor as described in the header. */
export interface GgufTensorInfo {
  readonly name: string;
  /** Shape in ggml order: `dims[0]` is the row length (the fastest-varying dimension). */
  readonly dims: readonly number[];
  /** ggml type code (see `GgmlType`). */
  readonly type: number;
  /** ggml type name, or `"unknown(<code>)"`. */
  readonly typeName: string;
  /** Offset of the data relative to {@link GgufHeader.dataOffset}. */
  readonly offset: number;
  /** Number of elements. */
  readonly elementCount: number;
  /** Bytes of data, or `null` when the type is unknown or the row length is not a multiple of its block. */
  readonly byteSize: number | null;
}

/** Everything in a GGUF file before the tensor data. */
export interface GgufHeader {
  readonly path: string;
  readonly fileSize: number;
  /** GGUF version (2 or 3). */
  readonly version: number;
  /** Tensor data alignment (`general.alignment`, default 32). */
  readonly alignment: number;
  /** Metadata values by key (a null-prototype object). */
  readonly metadata: Readonly<Record<string, GgufValue>>;
  /** Stored types of the metadata values, by key. */
  readonly metadataTypes: Readonly<Record<string, GgufValueTypeInfo>>;
  readonly tensors: readonly GgufTensorInfo[];
  /** Byte offset where the tensor infos start (the end of the metadata). */
  readonly tensorInfoOffset: number;
  /** Byte offset where the tensor data starts. */
  readonly dataOffset: number;
}

/** Options for {@link readGgufHeader}. */
export interface ReadGgufHeaderOptions {
  /** Aborts reading. */
  signal?: AbortSignal;
}

const READ_CHUNK = 1 << 20;

/** Reads a file front to back through a buffer that grows only for long single values. */
class Cursor {
  readonly #fh: FileHandle;
  readonly #path: string;
  readonly #signal: AbortSignal | undefined;
  readonly fileSize: number;
  #buf: Buffer = Buffer.alloc(READ_CHUNK);
  #bufStart = 0;
  #bufLen = 0;
  /** Absolute position of the next byte to parse. */
  pos = 0;
  /** What is being parsed, for error messages. */
  context = "the header";

  constructor(fh: FileHandle, path: string, fileSize: number, signal: AbortSignal | undefined) {
    this.#fh = fh;
    this.#path = path;
    this.fileSize = fileSize;
    this.#signal = signal;
  }

  /** Bytes left in the file after `pos`. */
  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Makes `n` bytes from `pos` available in the buffer; returns their offset in it. */
  async need(n: number): Promise<number> {
    const rel = this.pos - this.#bufStart;
    if (rel >= 0 && rel + n <= this.#bufLen) return rel;
    if (this.pos + n > this.fileSize) {
      throw new GgufError(
        GgufErrorCode.truncated,
        `File "${this.#path}" is truncated: it ends at byte ${this.fileSize} inside ${this.context}`,
        { path: this.#path },
      );
    }
    this.#signal?.throwIfAborted();
    const want = Math.min(Math.max(n, READ_CHUNK), this.fileSize - this.pos);
    if (want > this.#buf.length) this.#buf = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.#fh.read(this.#buf, got, want - got, this.pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.#bufStart = this.pos;
    this.#bufLen = got;
    if (got < n) {
      throw new GgufError(GgufErrorCode.truncated, `File "${this.#path}" shrank while being read`, { path: this.#path });
    }
    return 0;
  }

  async u8(): Promise<number> {
    const o = await this.need(1);
    this.pos += 1;
    return this.#buf.readUInt8(o);
  }

  async u32(): Promise<number> {
    const o = await this.need(4);
    this.pos += 4;
    return this.#buf.readUInt32LE(o);
  }

  async u64(): Promise<number | bigint> {
    const o = await this.need(8);
    this.pos += 8;
    const v = this.#buf.readBigUInt64LE(o);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /**
   * A u64 that must be a safe integer no larger than `max`. Values beyond the file size are
   * malformed; smaller ones that exceed `max` (what is left of the file) mean truncation.
   */
  async size(what: string, max: number): Promise<number> {
    const v = await this.u64();
    if (typeof v === "bigint" || v > Math.max(max, this.fileSize)) {
      throw new GgufError(GgufErrorCode.malformed, `File "${this.#path}" is malformed: ${what} ${String(v)} is too large`, {
        path: this.#path,
      });
    }
    if (v > max) {
      throw new GgufError(
        GgufErrorCode.truncated,
        `File "${this.#path}" is truncated: it ends at byte ${this.fileSize} inside ${this.context}`,
        { path: this.#path },
      );
    }
    return v;
  }

  async scalar(type: GgufValueType): Promise<GgufValue> {
    const b = this.#buf;
    switch (type) {
      case GgufValueType.UINT8:
        return b.readUInt8(await this.advance(1));
      case GgufValueType.INT8:
        return b.readInt8(await this.advance(1));
      case GgufValueType.UINT16:
        return b.readUInt16LE(await this.advance(2));
      case GgufValueType.INT16:
        return b.readInt16LE(await this.advance(2));
      case GgufValueType.UINT32:
        return b.readUInt32LE(await this.advance(4));
      case GgufValueType.INT32:
        return b.readInt32LE(await this.advance(4));
      case GgufValueType.FLOAT32:
        return b.readFloatLE(await this.advance(4));
      case GgufValueType.FLOAT64:
        return b.readDoubleLE(await this.advance(8));
      case GgufValueType.BOOL:
        return b.readUInt8(await this.advance(1)) !== 0;
      case GgufValueType.UINT64: {
        const v = this.#buf.readBigUInt64LE(await this.advance(8));
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufValueType.INT64: {
        const v = this.#buf.readBigInt64LE(await this.advance(8));
        return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufValueType.STRING:
        return this.string();
      default:
        throw new GgufError(GgufErrorCode.malformed, `File "${this.#path}" is malformed: unknown value type ${type} in ${this.context}`, {
          path: this.#path,
        });
    }
  }

  /**
   * Reads a scalar if it is already buffered, without awaiting; `undefined` otherwise. Keeps
   * token arrays of hundreds of thousands of strings fast.
   */
  trySync(type: GgufValueType): GgufValue | undefined {
    const rel = this.pos - this.#bufStart;
    const avail = this.#bufLen - rel;
    const b = this.#buf;
    if (type === GgufValueType.STRING) {
      if (avail < 8) return undefined;
      const len = b.readBigUInt64LE(rel);
      if (len > BigInt(avail - 8)) return undefined;
      const n = Number(len);
      this.pos += 8 + n;
      return b.toString("utf8", rel + 8, rel + 8 + n);
    }
    const size = SCALAR_BYTES[type];
    if (size === undefined || avail < size || type === GgufValueType.ARRAY) return undefined;
    this.pos += size;
    switch (type) {
      case GgufValueType.UINT8:
        return b.readUInt8(rel);
      case GgufValueType.INT8:
        return b.readInt8(rel);
      case GgufValueType.UINT16:
        return b.readUInt16LE(rel);
      case GgufValueType.INT16:
        return b.readInt16LE(rel);
      case GgufValueType.UINT32:
        return b.readUInt32LE(rel);
      case GgufValueType.INT32:
        return b.readInt32LE(rel);
      case GgufValueType.FLOAT32:
        return b.readFloatLE(rel);
      case GgufValueType.FLOAT64:
        return b.readDoubleLE(rel);
      case GgufValueType.BOOL:
        return b.readUInt8(rel) !== 0;
      default:
        this.pos -= size; // 64-bit integers: take the general path
        return undefined;
    }
  }

  /** Makes `n` bytes available, consumes them and returns their buffer offset. */
  async advance(n: number): Promise<number> {
    const o = await this.need(n);
    this.pos += n;
    return o;
  }

  async string(): Promise<string> {
    const len = await this.size("a string length", this.remaining - 8);
    const o = await this.need(len);
    this.pos += len;
    return this.#buf.toString("utf8", o, o + len);
  }
}

const SCALAR_BYTES: Readonly<Record<number, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.STRING]: 8,
  [GgufValueType.ARRAY]: 12,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

async function readArray(c: Cursor, itemType: GgufValueType, path: string, depth: number): Promise<GgufValue[]> {
  const itemBytes = SCALAR_BYTES[itemType];
  if (itemBytes === undefined || (itemType === GgufValueType.ARRAY && depth > 0)) {
    throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: unsupported array item type ${itemType} in ${c.context}`, {
      path,
    });
  }
  const count = await c.size("an array length", Math.floor(c.remaining / itemBytes));
  const out: GgufValue[] = new Array(count);
  for (let i = 0; i < count; i++) {
    if (itemType === GgufValueType.ARRAY) out[i] = await readArray(c, (await c.u32()) as GgufValueType, path, depth + 1);
    else out[i] = c.trySync(itemType) ?? (await c.scalar(itemType));
  }
  return out;
}

function fileError(path: string, err: unknown): GgufError {
  if (err instanceof GgufError) return err;
  if (err instanceof Error && err.name === "AbortError") {
    return new GgufError(GgufErrorCode.aborted, `Reading "${path}" was aborted`, { cause: err, path });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new GgufError(GgufErrorCode.io, `Cannot read "${path}": ${message}`, { cause: err, path });
}

/** Bytes of a tensor of `type` and shape `dims`, or `null` if the type is unknown or rows do not fill blocks. */
export function tensorByteSize(type: number, dims: readonly number[]): number | null {
  const traits = GGML_TYPE_TRAITS.get(type);
  const ne0 = dims[0] ?? 1;
  if (traits === undefined || ne0 % traits.blockSize !== 0) return null;
  const rows = dims.slice(1).reduce((a, b) => a * b, 1);
  return (ne0 / traits.blockSize) * traits.typeSize * rows;
}

/**
 * Reads the header, metadata and tensor infos of a GGUF file (versions 2 and 3, little-endian),
 * incrementally in 1 MiB reads, never touching the tensor data.
 *
 * @throws {GgufError} `io` if the file cannot be read, `truncated` if it is empty or ends early,
 * `bad_magic`, `unsupported_version`, `malformed` for structural errors, `aborted`.
 */
export async function readGgufHeader(path: string, options: ReadGgufHeaderOptions = {}): Promise<GgufHeader> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, "r");
    const fileSize = (await fh.stat()).size;
    if (fileSize === 0) throw new GgufError(GgufErrorCode.truncated, `File "${path}" is empty`, { path });
    const c = new Cursor(fh, path, fileSize, options.signal);
    const head = Buffer.alloc(Math.min(4, fileSize));
    await fh.read(head, 0, head.length, 0);
    if (head.toString("latin1") !== "GGUF") {
      throw new GgufError(
        GgufErrorCode.badMagic,
        `File "${path}" is not a GGUF file: it starts with bytes "${head.toString("hex")}", not "GGUF"`,
        { path },
      );
    }
    c.pos = 4;
    const version = await c.u32();
    if (version !== 2 && version !== 3) {
      const hint = (version & 0xffff) === 0 ? " (a big-endian file?)" : "";
      throw new GgufError(
        GgufErrorCode.unsupportedVersion,
        `File "${path}" has GGUF version ${version}${hint}; only versions 2 and 3 are supported`,
        {
          path,
        },
      );
    }
    const tensorCount = await c.size("the tensor count", Math.floor(fileSize / 32));
    const kvCount = await c.size("the metadata count", Math.floor(fileSize / 13));

    const metadata: Record<string, GgufValue> = Object.create(null);
    const metadataTypes: Record<string, GgufValueTypeInfo> = Object.create(null);
    for (let i = 0; i < kvCount; i++) {
      c.context = `metadata entry ${i}`;
      const key = await c.string();
      c.context = `metadata "${key}"`;
      if (key in metadata)
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: duplicate metadata key "${key}"`, { path });
      const type = (await c.u32()) as GgufValueType;
      if (SCALAR_BYTES[type] === undefined) {
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: unknown value type ${type} for "${key}"`, { path });
      }
      if (type === GgufValueType.ARRAY) {
        const itemType = (await c.u32()) as GgufValueType;
        metadata[key] = await readArray(c, itemType, path, 0);
        metadataTypes[key] = { type, itemType };
      } else {
        metadata[key] = await c.scalar(type);
        metadataTypes[key] = { type };
      }
    }

    const tensorInfoOffset = c.pos;
    let alignment = GGUF_DEFAULT_ALIGNMENT;
    const alignValue = metadata["general.alignment"];
    if (alignValue !== undefined) {
      if (typeof alignValue !== "number" || alignValue <= 0 || (alignValue & (alignValue - 1)) !== 0) {
        throw new GgufError(
          GgufErrorCode.malformed,
          `File "${path}" is malformed: "general.alignment" is "${String(alignValue)}", not a power of two`,
          {
            path,
          },
        );
      }
      alignment = alignValue;
    }

    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < tensorCount; i++) {
      c.context = `tensor info ${i}`;
      const name = await c.string();
      c.context = `tensor info "${name}"`;
      const nDims = await c.u32();
      if (nDims < 1 || nDims > GGML_MAX_DIMS) {
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: tensor "${name}" has ${nDims} dimensions`, { path });
      }
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(await c.size(`dimension ${d} of tensor "${name}"`, Number.MAX_SAFE_INTEGER));
      const type = await c.u32();
      const offset = await c.size(`the offset of tensor "${name}"`, Number.MAX_SAFE_INTEGER);
      const elementCount = dims.reduce((a, b) => a * b, 1);
      if (!Number.isSafeInteger(elementCount)) {
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: tensor "${name}" has too many elements`, { path });
      }
      const traits = GGML_TYPE_TRAITS.get(type);
      tensors.push({
        name,
        dims,
        type,
        typeName: traits?.name ?? `unknown(${type})`,
        offset,
        elementCount,
        byteSize: tensorByteSize(type, dims),
      });
    }
    const dataOffset = alignUp(c.pos, alignment);
    return { path, fileSize, version, alignment, metadata, metadataTypes, tensors, tensorInfoOffset, dataOffset };
  } catch (err) {
    throw fileError(path, err);
  } finally {
    await fh?.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Validation

/** What a valid model is, in a few numbers. */
export interface ModelInfo {
  /** `general.architecture`, for example `"llama"`. */
  readonly architecture: string;
  /** `general.name`, if set. */
  readonly name: string | null;
  readonly contextLength: number;
  readonly embeddingLength: number;
  /** Number of layers (`block_count`). */
  readonly blockCount: number;
  /** Attention heads (the largest, if given per layer); `null` if the architecture has none. */
  readonly headCount: number | null;
  /** Key/value heads; defaults to `headCount`. */
  readonly headCountKv: number | null;
  /** Feed-forward width (the largest, if given per layer); `null` if absent. */
  readonly feedForwardLength: number | null;
  /** Tokens in the vocabulary. */
  readonly vocabSize: number;
  /** `tokenizer.ggml.model`, for example `"llama"` or `"gpt2"`. */
  readonly tokenizerModel: string;
  /** Total tensor elements. */
  readonly parameterCount: number;
  readonly tensorCount: number;
  readonly fileSize: number;
  readonly ggufVersion: number;
  /** Whether `tokenizer.chat_template` is a non-empty string. */
  readonly hasChatTemplate: boolean;
}

/** Result of {@link validateLlamaModel}. */
export type ModelValidation =
  | { readonly ok: true; readonly info: ModelInfo; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly problems: readonly string[]; readonly warnings: readonly string[] };

/** Options for {@link validateLlamaModel}. */
export interface ValidateLlamaModelOptions {
  /** Aborts reading; the result then lists the abort as a problem. */
  signal?: AbortSignal;
}

/**
 * Architectures the llama.cpp bundled with node-llama-cpp 3.21.1 knows. Others get a warning
 * (llama.cpp refuses them with a catchable error).
 */
const KNOWN_ARCHITECTURES = new Set(
  (
    "llama llama4 deci falcon grok gpt2 gptj gptneox mpt baichuan starcoder refact bert modern-bert nomic-bert " +
    "nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 eurobert bloom stablelm qwen qwen2 qwen2moe qwen2vl qwen3 " +
    "qwen3moe qwen3next qwen3vl qwen3vlmoe qwen35 qwen35moe phi2 phi3 phimoe plamo plamo2 plamo3 codeshell orion " +
    "internlm2 minicpm minicpm3 gemma gemma2 gemma3 gemma3n gemma4 gemma-embedding starcoder2 mamba mamba2 jamba " +
    "falcon-h1 xverse command-r cohere2 dbrx olmo olmo2 olmoe openelm arctic deepseek deepseek2 chatglm glm4 " +
    "glm4moe bitnet t5 t5encoder jais nemotron nemotron_h exaone exaone4 rwkv6 rwkv6qwen2 rwkv7 arwkv7 granite " +
    "granitemoe granitehybrid chameleon wavtokenizer-dec plm bailingmoe bailingmoe2 dots1 arcee ernie4_5 " +
    "ernie4_5-moe hunyuan-moe hunyuan-dense smollm3 gpt-oss lfm2 lfm2moe dream smallthinker llada llada-moe " +
    "seed_oss grovemoe apertus minimax-m2 cogvlm rnd1 pangu-embedded mistral3"
  ).split(" "),
);

/** Architectures without attention heads or a feed-forward length in their metadata. */
const RECURRENT_ARCHITECTURES = new Set(["mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "wavtokenizer-dec"]);

/** Special token id keys checked against the vocabulary size. */
const SPECIAL_TOKEN_KEYS = ["bos", "eos", "unknown", "separator", "padding", "cls", "mask", "eot", "eom"].map(
  (k) => `tokenizer.ggml.${k}_token_id`,
);

function isCount(v: GgufValue | undefined): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0;
}

/** A count that may be given per layer (an array of counts); returns the largest, or `undefined`. */
function perLayerMax(v: GgufValue | undefined, layers: number, allowZero: boolean): number | undefined {
  if (typeof v === "number") return Number.isSafeInteger(v) && (v > 0 || (allowZero && v === 0)) ? v : undefined;
  if (Array.isArray(v) && v.length === layers && v.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
    const max = Math.max(...(v as number[]));
    return max > 0 ? max : undefined;
  }
  return undefined;
}

function describe(v: GgufValue | undefined): string {
  if (v === undefined) return "missing";
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return `"${String(v)}"`;
}

/**
 * Checks that llama.cpp can load a GGUF model, reading only its header: magic and version, the
 * architecture's required hyperparameters (a missing `feed_forward_length` or `head_count`
 * makes llama.cpp abort the whole process, so check before loading), the tokenizer arrays,
 * tensor types, offsets and that all tensor data lies inside the file (catches truncation).
 * For `llama` it also checks every expected tensor and its shape; for other architectures
 * llama.cpp knows, only the generic checks apply. Never throws; I/O errors are problems.
 */
export async function validateLlamaModel(path: string, options: ValidateLlamaModelOptions = {}): Promise<ModelValidation> {
  let header: GgufHeader;
  try {
    header = await readGgufHeader(path, options);
  } catch (err) {
    return { ok: false, problems: [err instanceof Error ? err.message : String(err)], warnings: [] };
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  const m = header.metadata;

  const arch = m["general.architecture"];
  if (typeof arch !== "string" || arch === "") {
    problems.push(`Metadata "general.architecture" is ${describe(arch)}, expected a non-empty string`);
    return { ok: false, problems, warnings };
  }
  if (!KNOWN_ARCHITECTURES.has(arch)) warnings.push(`Architecture "${arch}" is not one llama.cpp is known to support`);

  const requireCount = (key: string): number => {
    const v = m[key];
    if (!isCount(v)) {
      problems.push(`Metadata "${key}" is ${describe(v)}, expected a positive integer`);
      return 0;
    }
    return v;
  };
  const contextLength = requireCount(`${arch}.context_length`);
  const embeddingLength = requireCount(`${arch}.embedding_length`);
  const blockCount = requireCount(`${arch}.block_count`);

  let headCount: number | null = null;
  let headCountKv: number | null = null;
  let feedForwardLength: number | null = null;
  if (!RECURRENT_ARCHITECTURES.has(arch)) {
    const ffKey = `${arch}.feed_forward_length`;
    const ff = perLayerMax(m[ffKey], blockCount, true);
    if (ff === undefined) {
      problems.push(`Metadata "${ffKey}" is ${describe(m[ffKey])}, expected a positive integer (llama.cpp aborts without it)`);
    } else feedForwardLength = ff;
    const headKey = `${arch}.attention.head_count`;
    const heads = perLayerMax(m[headKey], blockCount, false);
    if (heads === undefined) {
      problems.push(`Metadata "${headKey}" is ${describe(m[headKey])}, expected a positive integer (llama.cpp aborts without it)`);
    } else headCount = heads;
    const kvKey = `${arch}.attention.head_count_kv`;
    if (m[kvKey] !== undefined) {
      const kv = perLayerMax(m[kvKey], blockCount, true);
      if (kv === undefined) problems.push(`Metadata "${kvKey}" is ${describe(m[kvKey])}, expected a positive integer`);
      else headCountKv = kv;
    } else headCountKv = headCount;
  }

  if (arch === "llama") checkLlamaHyperparameters(m, problems, embeddingLength, headCount, headCountKv);

  const vocabSize = checkTokenizer(header, arch, problems, warnings);
  checkTensors(header, problems);
  const shapeKnown = embeddingLength > 0 && blockCount > 0 && (headCount ?? 0) > 0 && (feedForwardLength ?? 0) > 0 && vocabSize > 0;
  if (arch === "llama" && shapeKnown) {
    checkLlamaTensors(header, problems, {
      embeddingLength,
      blockCount,
      headCount: headCount ?? 0,
      headCountKv: headCountKv ?? 0,
      feedForwardLength: feedForwardLength ?? 0,
      vocabSize,
    });
  }

  if (problems.length > 0) return { ok: false, problems, warnings };
  const name = m["general.name"];
  const template = m["tokenizer.chat_template"];
  return {
    ok: true,
    warnings,
    info: {
      architecture: arch,
      name: typeof name === "string" ? name : null,
      contextLength,
      embeddingLength,
      blockCount,
      headCount,
      headCountKv,
      feedForwardLength,
      vocabSize,
      tokenizerModel: String(m["tokenizer.ggml.model"]),
      parameterCount: header.tensors.reduce((s, t) => s + t.elementCount, 0),
      tensorCount: header.tensors.length,
      fileSize: header.fileSize,
      ggufVersion: header.version,
      hasChatTemplate: typeof template === "string" && template.trim() !== "",
    },
  };
}

function checkLlamaHyperparameters(
  m: Readonly<Record<string, GgufValue>>,
  problems: string[],
  embeddingLength: number,
  headCount: number | null,
  headCountKv: number | null,
): void {
  const eps = m["llama.attention.layer_norm_rms_epsilon"];
  if (typeof eps !== "number" || !(eps > 0)) {
    problems.push(`Metadata "llama.attention.layer_norm_rms_epsilon" is ${describe(eps)}, expected a positive number`);
  }
  if (headCount === null || embeddingLength === 0) return;
  const keyLength = m["llama.attention.key_length"];
  const headDim = typeof keyLength === "number" ? keyLength : embeddingLength / headCount;
  if (keyLength === undefined && embeddingLength % headCount !== 0) {
    problems.push(`Embedding length ${embeddingLength} is not divisible by head count ${headCount}`);
  }
  if (headCountKv !== null && headCountKv > 0 && headCount % headCountKv !== 0) {
    problems.push(`Head count ${headCount} is not divisible by key/value head count ${headCountKv}`);
  }
  const rot = m["llama.rope.dimension_count"];
  if (rot !== undefined && rot !== headDim) {
    problems.push(`Metadata "llama.rope.dimension_count" is ${describe(rot)}, expected the head dimension ${headDim}`);
  }
}

/** Checks the tokenizer metadata; returns the vocabulary size (0 if unknown). */
function checkTokenizer(header: GgufHeader, arch: string, problems: string[], warnings: string[]): number {
  const m = header.metadata;
  const model = m["tokenizer.ggml.model"];
  if (typeof model !== "string") {
    problems.push(`Metadata "tokenizer.ggml.model" is ${describe(model)}, expected a string such as "llama" or "gpt2"`);
    return 0;
  }
  if (model === "none" || model === "no_vocab") {
    const v = m[`${arch}.vocab_size`];
    return typeof v === "number" ? v : 0;
  }
  const tokens = m["tokenizer.ggml.tokens"];
  if (!Array.isArray(tokens) || tokens.length === 0 || header.metadataTypes["tokenizer.ggml.tokens"]?.itemType !== GgufValueType.STRING) {
    problems.push(`Metadata "tokenizer.ggml.tokens" is ${describe(tokens)}, expected a non-empty array of strings`);
    return 0;
  }
  const n = tokens.length;
  for (const key of ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"]) {
    const v = m[key];
    if (v === undefined) continue;
    if (!Array.isArray(v) || v.length !== n)
      problems.push(`Metadata "${key}" is ${describe(v)}, expected an array of ${n} (one per token)`);
  }
  if (m["tokenizer.ggml.token_type"] === undefined) {
    warnings.push(`Metadata "tokenizer.ggml.token_type" is missing: special tokens will be read as text`);
  }
  if (model === "gpt2" && !Array.isArray(m["tokenizer.ggml.merges"])) {
    problems.push(`Metadata "tokenizer.ggml.merges" is missing, and a "gpt2" tokenizer needs it`);
  }
  if (model === "llama" && m["tokenizer.ggml.add_space_prefix"] !== false) {
    warnings.push(`Metadata "tokenizer.ggml.add_space_prefix" is not false: a space is inserted after every special token`);
  }
  for (const key of SPECIAL_TOKEN_KEYS) {
    const v = m[key];
    if (v === undefined) continue;
    if (typeof v !== "number" || v < 0 || v >= n)
      warnings.push(`Metadata "${key}" is ${describe(v)}, outside the vocabulary of ${n} tokens`);
  }
  const vocabSize = m[`${arch}.vocab_size`];
  if (vocabSize !== undefined && vocabSize !== n) {
    warnings.push(`Metadata "${arch}.vocab_size" is ${describe(vocabSize)} but there are ${n} tokens`);
  }
  return n;
}

/** Checks tensor types, names, offsets and that their data lies inside the file. */
function checkTensors(header: GgufHeader, problems: string[]): void {
  const names = new Set<string>();
  let expected = 0;
  const dataBytes = header.fileSize - header.dataOffset;
  if (dataBytes < 0 && header.tensors.length > 0) {
    problems.push(`File is truncated: it is ${header.fileSize} bytes but tensor data would start at byte ${header.dataOffset}`);
    return;
  }
  for (const t of header.tensors) {
    if (names.has(t.name)) problems.push(`Tensor "${t.name}" appears twice`);
    names.add(t.name);
    const traits = GGML_TYPE_TRAITS.get(t.type);
    if (traits === undefined) {
      problems.push(`Tensor "${t.name}" has unknown type ${t.type}`);
      return;
    }
    if (t.byteSize === null) {
      problems.push(`Tensor "${t.name}" has row length ${t.dims[0]}, not a multiple of the ${traits.name} block size ${traits.blockSize}`);
      return;
    }
    if (t.offset !== expected) {
      problems.push(`Tensor "${t.name}" starts at data offset ${t.offset}, expected ${expected} (tensors must be contiguous and aligned)`);
      return;
    }
    if (t.offset + t.byteSize > dataBytes) {
      problems.push(
        `File is truncated: tensor "${t.name}" ends at byte ${header.dataOffset + t.offset + t.byteSize} but the file has ${header.fileSize} bytes`,
      );
      return;
    }
    expected = alignUp(t.offset + t.byteSize, header.alignment);
  }
}

interface LlamaShape {
  readonly embeddingLength: number;
  readonly blockCount: number;
  readonly headCount: number;
  readonly headCountKv: number;
  readonly feedForwardLength: number;
  readonly vocabSize: number;
}

/** Checks that every tensor a llama model needs is present with the right shape. */
function checkLlamaTensors(header: GgufHeader, problems: string[], s: LlamaShape): void {
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  const m = header.metadata;
  const d = s.embeddingLength;
  const keyLength = typeof m["llama.attention.key_length"] === "number" ? (m["llama.attention.key_length"] as number) : d / s.headCount;
  const valueLength = typeof m["llama.attention.value_length"] === "number" ? (m["llama.attention.value_length"] as number) : keyLength;
  const experts = typeof m["llama.expert_count"] === "number" ? (m["llama.expert_count"] as number) : 0;
  const expect = (name: string, dims: readonly number[] | null, optional = false) => {
    const t = byName.get(name);
    if (t === undefined) {
      if (!optional) problems.push(`Tensor "${name}" is missing`);
      return;
    }
    if (dims === null) return;
    const got = [...t.dims];
    while (got.length > dims.length && got[got.length - 1] === 1) got.pop();
    if (got.length !== dims.length || got.some((x, i) => x !== dims[i])) {
      problems.push(`Tensor "${name}" has shape [${t.dims.join(", ")}], expected [${dims.join(", ")}]`);
    }
  };
  expect("token_embd.weight", [d, s.vocabSize]);
  expect("output_norm.weight", [d]);
  expect("output.weight", [d, s.vocabSize], true); // absent: tied to token_embd
  for (let i = 0; i < s.blockCount && problems.length < 20; i++) {
    const t = (x: string) => `blk.${i}.${x}.weight`;
    expect(t("attn_norm"), [d]);
    expect(t("attn_q"), [d, keyLength * s.headCount]);
    expect(t("attn_k"), [d, keyLength * s.headCountKv]);
    expect(t("attn_v"), [d, valueLength * s.headCountKv]);
    expect(t("attn_output"), [valueLength * s.headCount, d]);
    expect(t("ffn_norm"), [d]);
    if (experts > 0) {
      expect(t("ffn_gate_inp"), null);
      for (const x of ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]) expect(t(x), null);
    } else {
      expect(t("ffn_gate"), [d, s.feedForwardLength]);
      expect(t("ffn_up"), [d, s.feedForwardLength]);
      expect(t("ffn_down"), [s.feedForwardLength, d]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Fingerprint

/** Options for {@link modelFingerprint}. */
export interface ModelFingerprintOptions {
  /** Files up to this size are hashed whole. Default 256 MiB. */
  fullHashMaxBytes?: number;
  /** Evenly spaced samples of a larger file's tensor data. Default 256. */
  sampleCount?: number;
  /** Bytes per sample. Default 64 KiB. */
  sampleBytes?: number;
  /** Aborts hashing. */
  signal?: AbortSignal;
}

const FINGERPRINT_DOMAIN = "atlas-gguf-fingerprint/1";

/**
 * A stable id of a model file: 64 hex digits of SHA-256.
 *
 * Files up to `fullHashMaxBytes` (default 256 MiB, which covers every generated model) are
 * hashed whole, so any change of a weight changes the id. Larger files hash their size, every
 * byte before the tensor data (header, metadata, tensor infos), the first and last 4 KiB of every
 * tensor and `sampleCount` evenly spaced `sampleBytes` chunks of the data: about 16 MiB plus 8 KiB
 * per tensor, read in a fraction of a second even for multi-GB models. Two real models (other
 * weights, another quantization) differ in nearly every chunk; only a deliberate edit of an
 * unsampled byte of a large file goes unnoticed. The two modes are domain-separated, so they
 * never give the same id.
 *
 * @throws {GgufError} `io` if the file cannot be read; a large file that is not valid GGUF is
 * sampled as raw bytes rather than rejected.
 */
export async function modelFingerprint(path: string, options: ModelFingerprintOptions = {}): Promise<string> {
  const fullMax = options.fullHashMaxBytes ?? 256 * 1024 * 1024;
  const sampleCount = options.sampleCount ?? 256;
  const sampleBytes = options.sampleBytes ?? 64 * 1024;
  const { signal } = options;
  let fh: FileHandle | undefined;
  try {
    const size = (await stat(path)).size;
    const hash = createHash("sha256");
    const sizeBytes = Buffer.alloc(8);
    sizeBytes.writeBigUInt64LE(BigInt(size));
    fh = await open(path, "r");
    const buf = Buffer.alloc(4 * 1024 * 1024);
    const hashRange = async (start: number, end: number) => {
      let pos = start;
      while (pos < end) {
        signal?.throwIfAborted();
        const { bytesRead } = await fh!.read(buf, 0, Math.min(buf.length, end - pos), pos);
        if (bytesRead === 0) break;
        hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    };
    if (size <= fullMax) {
      hash.update(`${FINGERPRINT_DOMAIN}\nfull\n`);
      hash.update(sizeBytes);
      await hashRange(0, size);
      return hash.digest("hex");
    }
    hash.update(`${FINGERPRINT_DOMAIN}\nsampled\n`);
    hash.update(sizeBytes);
    let dataOffset = Math.min(size, 16 * 1024 * 1024);
    let tensors: readonly GgufTensorInfo[] = [];
    try {
      const header = await readGgufHeader(path, { ...(signal === undefined ? {} : { signal }) });
      dataOffset = Math.min(size, header.dataOffset);
      tensors = header.tensors;
    } catch (err) {
      if (err instanceof GgufError && err.code === GgufErrorCode.aborted) throw err;
    }
    await hashRange(0, dataOffset);
    const edge = 4096;
    for (const t of tensors) {
      const start = dataOffset + t.offset;
      const end = Math.min(size, start + (t.byteSize ?? 0));
      await hashRange(start, Math.min(end, start + edge));
      await hashRange(Math.max(start, end - edge), end);
    }
    const span = size - dataOffset;
    for (let i = 0; i < sampleCount && span > 0; i++) {
      const start = dataOffset + Math.floor((span * i) / sampleCount);
      await hashRange(start, Math.min(size, start + sampleBytes));
    }
    await hashRange(Math.max(dataOffset, size - sampleBytes), size);
    return hash.digest("hex");
  } catch (err) {
    throw fileError(path, err);
  } finally {
    await fh?.close().catch(() => {});
  }
}
