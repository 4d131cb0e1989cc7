/**
 * `writeLlamaModel`: writes a small llama-architecture GGUF model with deterministic random
 * weights, for tests and benchmarks that need a real model without downloading one.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { ByteWriter, type GgufTypedValue, hashSeed, Mulberry32, quantizeQ8_0, toFloat16Bits, writeKeyValue } from "./encode.ts";
import {
  alignUp,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgmlType,
  GgufError,
  GgufErrorCode,
  GgufValueType,
  TokenType,
} from "./format.ts";
import { buildVocabulary, SpecialTokenId } from "./vocab.ts";

/** Version of the generator, stored as `atlas.generator`; bumped whenever output bytes change. */
export const GENERATOR_VERSION = "atlas-gguf/1";

/**
 * A ChatML chat template (Jinja). node-llama-cpp's `chatWrapper: "auto"` recognizes it as
 * `ChatMLChatWrapper`; llama.cpp's own template detection does too.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Model presets. */
export const ModelPreset = {
  /** 192K parameters, F32, 0.79 MB: written in ~20 ms, loads in ~20 ms, thousands of tokens/s. For tests. */
  tiny: "tiny",
  /** 100M parameters, Q8_0, 107 MB: written in ~2.5 s, ~190 tokens/s decode on one thread. For benchmarks. */
  bench: "bench",
} as const;

/** A model preset name. */
export type ModelPreset = (typeof ModelPreset)[keyof typeof ModelPreset];

/** Tensor types the writer can produce for weight matrices (norm vectors are always F32). */
export const WeightType = {
  F32: "F32",
  F16: "F16",
  /** 8-bit blocks of 32; needs every row length (embedding and feed-forward length) divisible by 32. */
  Q8_0: "Q8_0",
} as const;

/** A weight tensor type name. */
export type WeightType = (typeof WeightType)[keyof typeof WeightType];

/** Fully resolved generation parameters; every field of {@link WriteLlamaModelOptions} filled in. */
export interface LlamaModelParams {
  /** The preset the defaults came from. */
  readonly preset: ModelPreset;
  /** `general.name`. */
  readonly name: string;
  readonly embeddingLength: number;
  readonly blockCount: number;
  readonly headCount: number;
  readonly headCountKv: number;
  readonly feedForwardLength: number;
  readonly contextLength: number;
  /** PRNG seed, an unsigned 32-bit integer. */
  readonly seed: number;
  /** Standard deviation of the (uniformly distributed) weight matrix entries. */
  readonly weightStd: number;
  readonly tensorType: WeightType;
  /** Logit bias of `<|im_end|>`, in units of the standard deviation of the other logits. */
  readonly eosBias: number;
  /** Logit bias of the 256 byte tokens, in the same units. */
  readonly byteBias: number;
}

/** Options for {@link writeLlamaModel}. Unset fields come from the preset. */
export interface WriteLlamaModelOptions {
  /** Default `"tiny"`. */
  preset?: ModelPreset;
  /** `general.name`. Default `"atlas-demo-<preset>"`. */
  name?: string;
  /** Model width. tiny 64, bench 768. Must be divisible by `headCount` (and by 32 for Q8_0). */
  embeddingLength?: number;
  /** Transformer layers. tiny 2, bench 12. */
  blockCount?: number;
  /** Attention heads. tiny 4, bench 12. */
  headCount?: number;
  /** Key/value heads (GQA when fewer than `headCount`). Default `headCount`. */
  headCountKv?: number;
  /** Feed-forward width. tiny 128, bench 2560. */
  feedForwardLength?: number;
  /** Training context length (`llama.context_length`). Default 4096. */
  contextLength?: number;
  /** PRNG seed (unsigned 32-bit integer). Default 1. Same options and seed give the same bytes. */
  seed?: number;
  /**
   * Standard deviation of the weight matrix entries (uniformly distributed). tiny 0.2, bench
   * 0.06: both give logits with a spread of about 1.6, so replies differ per prompt. Around ten
   * times smaller, every prompt gets the same reply.
   */
  weightStd?: number;
  /** Weight matrix type. tiny `"F32"`, bench `"Q8_0"`. */
  tensorType?: WeightType;
  /**
   * Logit bias of `<|im_end|>` in standard deviations of the other logits; higher ends replies
   * sooner. tiny 1, bench 0.9: at temperature 0 the median reply is ~45–50 tokens, 19–20 of 20
   * test prompts end before 200 tokens. Calibrated for the preset shapes; other shapes get
   * roughly (within ~20%) the same bias.
   */
  eosBias?: number;
  /**
   * Logit bias of the 256 byte tokens, in the same units; lower makes output more printable.
   * Default -1: under 1% byte tokens at temperature 0, more when sampling (so invalid UTF-8 does
   * occur).
   */
  byteBias?: number;
  /** Aborts writing; the partial file is removed. */
  signal?: AbortSignal;
}

/** What {@link writeLlamaModel} wrote. */
export interface WrittenLlamaModel {
  /** The final path. */
  readonly path: string;
  /** File size in bytes. */
  readonly fileSize: number;
  /** Number of weights (all tensor elements). */
  readonly parameterCount: number;
  /** Number of tokens in the vocabulary. */
  readonly vocabSize: number;
  /** The parameters used. */
  readonly params: LlamaModelParams;
}

type PresetDefaults = Omit<LlamaModelParams, "preset" | "name" | "seed">;

/** Defaults of each preset. */
export const PRESET_DEFAULTS: Readonly<Record<ModelPreset, Readonly<PresetDefaults>>> = {
  tiny: {
    embeddingLength: 64,
    blockCount: 2,
    headCount: 4,
    headCountKv: 4,
    feedForwardLength: 128,
    contextLength: 4096,
    weightStd: 0.2,
    tensorType: WeightType.F32,
    eosBias: 1,
    byteBias: -1,
  },
  bench: {
    embeddingLength: 768,
    blockCount: 12,
    headCount: 12,
    headCountKv: 12,
    feedForwardLength: 2560,
    contextLength: 4096,
    weightStd: 0.06,
    tensorType: WeightType.Q8_0,
    eosBias: 0.9,
    byteBias: -1,
  },
};

// Bias of control tokens other than <|im_end|>: they are never generated.
const CONTROL_BIAS = -30;

/** Resolves options against their preset and checks them; throws `GgufError` (`invalid_options`). */
export function resolveLlamaModelParams(options: WriteLlamaModelOptions = {}): LlamaModelParams {
  const preset = options.preset ?? ModelPreset.tiny;
  const defaults = PRESET_DEFAULTS[preset];
  if (defaults === undefined) {
    throw new GgufError(GgufErrorCode.invalidOptions, `Unknown preset "${String(preset)}": use "tiny" or "bench"`);
  }
  const headCount = options.headCount ?? defaults.headCount;
  const p: LlamaModelParams = {
    ...defaults,
    preset,
    name: options.name ?? `atlas-demo-${preset}`,
    embeddingLength: options.embeddingLength ?? defaults.embeddingLength,
    blockCount: options.blockCount ?? defaults.blockCount,
    headCount,
    headCountKv: options.headCountKv ?? (options.headCount === undefined ? defaults.headCountKv : headCount),
    feedForwardLength: options.feedForwardLength ?? defaults.feedForwardLength,
    contextLength: options.contextLength ?? defaults.contextLength,
    seed: options.seed ?? 1,
    weightStd: options.weightStd ?? defaults.weightStd,
    tensorType: options.tensorType ?? defaults.tensorType,
    eosBias: options.eosBias ?? defaults.eosBias,
    byteBias: options.byteBias ?? defaults.byteBias,
  };
  const bad = (what: string): never => {
    throw new GgufError(GgufErrorCode.invalidOptions, `Invalid model options: ${what}`);
  };
  for (const key of ["embeddingLength", "blockCount", "headCount", "headCountKv", "feedForwardLength", "contextLength"] as const) {
    const v = p[key];
    if (!Number.isSafeInteger(v) || v < 1 || v > 2 ** 31 - 1) bad(`"${key}" must be a positive integer, got "${v}"`);
  }
  if (!Number.isSafeInteger(p.seed) || p.seed < 0 || p.seed > 0xffffffff) {
    bad(`"seed" must be an unsigned 32-bit integer, got "${p.seed}"`);
  }
  if (!(p.weightStd > 0) || !Number.isFinite(p.weightStd)) bad(`"weightStd" must be a positive number, got "${p.weightStd}"`);
  if (!Number.isFinite(p.eosBias) || !Number.isFinite(p.byteBias)) bad("biases must be finite numbers");
  if (!Object.values(WeightType).includes(p.tensorType)) bad(`unknown tensor type "${p.tensorType}"`);
  if (p.embeddingLength < 2) bad(`"embeddingLength" must be at least 2, got "${p.embeddingLength}"`);
  if (p.embeddingLength % p.headCount !== 0) {
    bad(`"embeddingLength" ${p.embeddingLength} is not divisible by "headCount" ${p.headCount}`);
  }
  if ((p.embeddingLength / p.headCount) % 2 !== 0) bad(`head dimension ${p.embeddingLength / p.headCount} must be even for RoPE`);
  if (p.headCount % p.headCountKv !== 0) bad(`"headCount" ${p.headCount} is not divisible by "headCountKv" ${p.headCountKv}`);
  if (p.tensorType === WeightType.Q8_0 && (p.embeddingLength % 32 !== 0 || p.feedForwardLength % 32 !== 0)) {
    bad(`Q8_0 needs "embeddingLength" and "feedForwardLength" divisible by 32, got "${p.embeddingLength}" and "${p.feedForwardLength}"`);
  }
  return p;
}

/** One tensor to write: shape in ggml order (`dims[0]` is the row length) and a row generator. */
interface TensorPlan {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: GgmlType;
  /** Fills `row` with row number `index`; called for rows 0, 1, 2, ... in order. */
  readonly fillRow: (row: Float32Array, index: number) => void;
}

function rowBytes(type: GgmlType, length: number): number {
  if (type === GgmlType.F32) return length * 4;
  if (type === GgmlType.F16) return length * 2;
  return (length / 32) * 34;
}

function weightGgmlType(t: WeightType): GgmlType {
  return t === WeightType.F32 ? GgmlType.F32 : t === WeightType.F16 ? GgmlType.F16 : GgmlType.Q8_0;
}

/*
 * How the logit bias works. Channel 0 of the residual stream is a constant: every token
 * embedding holds `biasChannel` there, no layer writes to it (row 0 of `attn_output` and
 * `ffn_down` is zero) and no layer reads it (channel 0 of `attn_norm` and `ffn_norm` is zero,
 * which also keeps it from adding a common offset to every position's output). After the final
 * RMS norm it is about constant, so column 0 of `output.weight` adds a per-token constant to
 * the logits. The other logits have a spread of `weightStd·√(width − b²)`, `b` the normalized
 * bias channel; `b` is estimated from the expected growth of the residual stream
 * (`expectedResidualNormSq`), which is within about 20% of what llama.cpp computes for the
 * shapes we tried (2–12 layers, width 64–768, weightStd 0.06–0.2).
 */

function planTensors(p: LlamaModelParams, vocabBiases: Float64Array): TensorPlan[] {
  const d = p.embeddingLength;
  const ff = p.feedForwardLength;
  const headDim = d / p.headCount;
  const dKv = headDim * p.headCountKv;
  const wType = weightGgmlType(p.tensorType);
  const n = vocabBiases.length;
  const amplitude = (std: number) => std * Math.sqrt(3); // uniform on [-a, a] has std a/√3

  const random = (name: string, std: number, edit?: (row: Float32Array, index: number) => void) => {
    const rng = new Mulberry32(hashSeed(p.seed, name));
    const a = amplitude(std);
    return (row: Float32Array, index: number) => {
      for (let i = 0; i < row.length; i++) row[i] = (rng.next() * 2 - 1) * a;
      edit?.(row, index);
    };
  };
  const constant = (value: number, first?: number) => (row: Float32Array) => {
    row.fill(value);
    if (first !== undefined) row[0] = first;
  };

  // Bias channel value in the embeddings: as large as the norm of the other channels.
  const biasChannel = Math.sqrt(d - 1);
  const normalizedBias = (biasChannel * Math.sqrt(d)) / Math.sqrt(expectedResidualNormSq(p, biasChannel) + biasChannel ** 2);
  const logitStd = p.weightStd * Math.sqrt(d - normalizedBias ** 2);

  const plans: TensorPlan[] = [
    {
      name: "token_embd.weight",
      dims: [d, n],
      type: wType,
      fillRow: random("token_embd.weight", 1, (row) => {
        row[0] = biasChannel;
      }),
    },
  ];
  for (let b = 0; b < p.blockCount; b++) {
    const t = (s: string) => `blk.${b}.${s}.weight`;
    const zeroRow0 = (row: Float32Array, index: number) => {
      if (index === 0) row.fill(0);
    };
    plans.push(
      { name: t("attn_norm"), dims: [d], type: GgmlType.F32, fillRow: constant(1, 0) },
      { name: t("attn_q"), dims: [d, d], type: wType, fillRow: random(t("attn_q"), p.weightStd) },
      { name: t("attn_k"), dims: [d, dKv], type: wType, fillRow: random(t("attn_k"), p.weightStd) },
      { name: t("attn_v"), dims: [d, dKv], type: wType, fillRow: random(t("attn_v"), p.weightStd) },
      { name: t("attn_output"), dims: [d, d], type: wType, fillRow: random(t("attn_output"), p.weightStd, zeroRow0) },
      { name: t("ffn_norm"), dims: [d], type: GgmlType.F32, fillRow: constant(1, 0) },
      { name: t("ffn_gate"), dims: [d, ff], type: wType, fillRow: random(t("ffn_gate"), p.weightStd) },
      { name: t("ffn_up"), dims: [d, ff], type: wType, fillRow: random(t("ffn_up"), p.weightStd) },
      { name: t("ffn_down"), dims: [ff, d], type: wType, fillRow: random(t("ffn_down"), p.weightStd, zeroRow0) },
    );
  }
  plans.push(
    { name: "output_norm.weight", dims: [d], type: GgmlType.F32, fillRow: constant(1) },
    {
      name: "output.weight",
      dims: [d, n],
      type: wType,
      fillRow: random("output.weight", p.weightStd, (row, index) => {
        row[0] = (vocabBiases[index]! * logitStd) / normalizedBias;
      }),
    },
  );
  return plans;
}

/** E[silu(g)²] for g ~ N(0, s²), by numeric integration. */
function meanSquaredSilu(s: number): number {
  const steps = 4000;
  const lo = -10 * s;
  const dx = (20 * s) / steps;
  let sum = 0;
  for (let i = 0; i <= steps; i++) {
    const g = lo + i * dx;
    const silu = g / (1 + Math.exp(-g));
    sum += silu * silu * Math.exp((-g * g) / (2 * s * s));
  }
  return (sum * dx) / (s * Math.sqrt(2 * Math.PI));
}

// Fraction of a value vector's variance that survives attention averaging (fitted).
const ATTENTION_KEEP = 0.5;

/**
 * Expected squared norm of the residual stream after the last layer, without the bias channel
 * (whose value is `biasChannel`). Each sublayer sees an RMS-normalized input whose bias channel
 * is masked out by the norm weight, so the rest of its input has squared norm `width·f` with
 * `f = R/(R + biasChannel²)`, `R` the residual so far. Pre-activations then have variance
 * `s² = weightStd²·width·f`; an attention output channel has variance
 * `weightStd²·width·s²·ATTENTION_KEEP`, a feed-forward one `weightStd²·ff·E[silu(g)²]·s²`.
 */
function expectedResidualNormSq(p: LlamaModelParams, biasChannel: number): number {
  const d = p.embeddingLength;
  const w2 = p.weightStd ** 2;
  let residual = d - 1; // embeddings: unit variance per channel
  const preActivation = () => w2 * d * (residual / (residual + biasChannel ** 2));
  for (let b = 0; b < p.blockCount; b++) {
    let s2 = preActivation();
    residual += (d - 1) * w2 * d * s2 * ATTENTION_KEEP;
    s2 = preActivation();
    residual += (d - 1) * w2 * p.feedForwardLength * meanSquaredSilu(Math.sqrt(s2)) * s2;
  }
  return residual;
}

function tokenBiases(types: readonly TokenType[], p: LlamaModelParams): Float64Array {
  const biases = new Float64Array(types.length);
  types.forEach((type, id) => {
    if (id === SpecialTokenId.imEnd) biases[id] = p.eosBias;
    else if (type === TokenType.BYTE) biases[id] = p.byteBias;
    else if (type !== TokenType.NORMAL) biases[id] = CONTROL_BIAS;
  });
  return biases;
}

function fileTypeOf(t: WeightType): number {
  // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7
  return t === WeightType.F32 ? 0 : t === WeightType.F16 ? 1 : 7;
}

function buildHeader(p: LlamaModelParams, plans: readonly TensorPlan[]): { header: Uint8Array; offsets: number[] } {
  const vocab = buildVocabulary();
  const w = new ByteWriter();
  w.bytes(Buffer.from(GGUF_MAGIC, "latin1"));
  w.u32(GGUF_VERSION);
  w.u64(plans.length);

  const U32 = GgufValueType.UINT32;
  const kv: Array<[string, GgufTypedValue]> = [
    ["general.architecture", { type: GgufValueType.STRING, value: "llama" }],
    ["general.name", { type: GgufValueType.STRING, value: p.name }],
    ["general.alignment", { type: U32, value: GGUF_DEFAULT_ALIGNMENT }],
    ["general.file_type", { type: U32, value: fileTypeOf(p.tensorType) }],
    ["general.quantization_version", { type: U32, value: 2 }],
    ["llama.context_length", { type: U32, value: p.contextLength }],
    ["llama.embedding_length", { type: U32, value: p.embeddingLength }],
    ["llama.block_count", { type: U32, value: p.blockCount }],
    ["llama.feed_forward_length", { type: U32, value: p.feedForwardLength }],
    ["llama.attention.head_count", { type: U32, value: p.headCount }],
    ["llama.attention.head_count_kv", { type: U32, value: p.headCountKv }],
    ["llama.attention.layer_norm_rms_epsilon", { type: GgufValueType.FLOAT32, value: 1e-5 }],
    ["llama.rope.dimension_count", { type: U32, value: p.embeddingLength / p.headCount }],
    ["llama.rope.freq_base", { type: GgufValueType.FLOAT32, value: 10000 }],
    ["llama.vocab_size", { type: U32, value: vocab.tokens.length }],
    ["tokenizer.ggml.model", { type: GgufValueType.STRING, value: "llama" }],
    ["tokenizer.ggml.tokens", { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: [...vocab.tokens] }],
    ["tokenizer.ggml.scores", { type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value: [...vocab.scores] }],
    ["tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value: [...vocab.types] }],
    ["tokenizer.ggml.bos_token_id", { type: U32, value: SpecialTokenId.bos }],
    ["tokenizer.ggml.eos_token_id", { type: U32, value: SpecialTokenId.imEnd }],
    ["tokenizer.ggml.eot_token_id", { type: U32, value: SpecialTokenId.imEnd }],
    ["tokenizer.ggml.unknown_token_id", { type: U32, value: SpecialTokenId.unk }],
    ["tokenizer.ggml.add_bos_token", { type: GgufValueType.BOOL, value: true }],
    ["tokenizer.ggml.add_eos_token", { type: GgufValueType.BOOL, value: false }],
    ["tokenizer.ggml.add_space_prefix", { type: GgufValueType.BOOL, value: false }],
    ["tokenizer.chat_template", { type: GgufValueType.STRING, value: CHATML_TEMPLATE }],
    ["atlas.generator", { type: GgufValueType.STRING, value: GENERATOR_VERSION }],
    ["atlas.preset", { type: GgufValueType.STRING, value: p.preset }],
    ["atlas.seed", { type: U32, value: p.seed }],
    ["atlas.weight_std", { type: GgufValueType.FLOAT32, value: p.weightStd }],
    ["atlas.eos_bias", { type: GgufValueType.FLOAT32, value: p.eosBias }],
    ["atlas.byte_bias", { type: GgufValueType.FLOAT32, value: p.byteBias }],
  ];
  w.u64(kv.length);
  for (const [key, value] of kv) writeKeyValue(w, key, value);

  const offsets: number[] = [];
  let offset = 0;
  for (const plan of plans) {
    w.string(plan.name);
    w.u32(plan.dims.length);
    for (const dim of plan.dims) w.u64(dim);
    w.u32(plan.type);
    w.u64(offset);
    offsets.push(offset);
    offset = alignUp(offset + tensorBytes(plan), GGUF_DEFAULT_ALIGNMENT);
  }
  w.pad(GGUF_DEFAULT_ALIGNMENT);
  return { header: w.toUint8Array(), offsets };
}

function tensorBytes(plan: TensorPlan): number {
  const rows = plan.dims.slice(1).reduce((a, b) => a * b, 1);
  return rowBytes(plan.type, plan.dims[0]!) * rows;
}

function encodeRow(type: GgmlType, row: Float32Array, out: Uint8Array, offset: number): number {
  if (type === GgmlType.F32) {
    out.set(new Uint8Array(row.buffer, row.byteOffset, row.byteLength), offset);
    return offset + row.byteLength;
  }
  if (type === GgmlType.F16) {
    let o = offset;
    for (let i = 0; i < row.length; i++) {
      const h = toFloat16Bits(row[i]!);
      out[o++] = h & 0xff;
      out[o++] = h >>> 8;
    }
    return o;
  }
  return quantizeQ8_0(row, out, offset);
}

const CHUNK_BYTES = 1 << 20;

/**
 * Writes a llama-architecture GGUF v3 model with deterministic random weights to `path`.
 *
 * The file is streamed to a temporary file beside `path` (chunks of about 1 MiB), synced and
 * renamed over `path`, so readers never see a partial model and concurrent writers of the same
 * options leave one complete, identical file. Same options and seed give byte-identical files.
 *
 * @throws {GgufError} `invalid_options` for inconsistent options, `io` when writing fails,
 * `aborted` when `options.signal` aborts.
 */
export async function writeLlamaModel(path: string, options: WriteLlamaModelOptions = {}): Promise<WrittenLlamaModel> {
  const params = resolveLlamaModelParams(options);
  const { signal } = options;
  const vocab = buildVocabulary();
  const plans = planTensors(params, tokenBiases(vocab.types, params));
  const { header, offsets } = buildHeader(params, plans);

  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  let written = 0;
  try {
    fh = await open(tmp, "wx");
    const file = fh;
    const put = async (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await file.write(bytes, done, bytes.length - done, written + done);
        done += bytesWritten;
      }
      written += bytes.length;
    };
    await put(header);
    const dataStart = header.length;
    const chunk = new Uint8Array(CHUNK_BYTES);
    for (let t = 0; t < plans.length; t++) {
      const plan = plans[t]!;
      const pad = dataStart + offsets[t]! - written;
      if (pad > 0) await put(new Uint8Array(pad));
      const rowLength = plan.dims[0]!;
      const rows = plan.dims.slice(1).reduce((a, b) => a * b, 1);
      const bytesPerRow = rowBytes(plan.type, rowLength);
      const row = new Float32Array(rowLength);
      let used = 0;
      for (let r = 0; r < rows; r++) {
        if (used + bytesPerRow > chunk.length && used > 0) {
          signal?.throwIfAborted();
          await put(chunk.subarray(0, used));
          used = 0;
        }
        plan.fillRow(row, r);
        if (bytesPerRow > chunk.length) {
          const big = new Uint8Array(bytesPerRow);
          encodeRow(plan.type, row, big, 0);
          await put(big);
        } else {
          used = encodeRow(plan.type, row, chunk, used);
        }
      }
      if (used > 0) await put(chunk.subarray(0, used));
    }
    const end = alignUp(written, GGUF_DEFAULT_ALIGNMENT);
    if (end > written) await put(new Uint8Array(end - written));
    signal?.throwIfAborted();
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    if (err instanceof GgufError) throw err;
    if (signal?.aborted) throw new GgufError(GgufErrorCode.aborted, `Writing model "${path}" was aborted`, { cause: err, path });
    const message = err instanceof Error ? err.message : String(err);
    throw new GgufError(GgufErrorCode.io, `Cannot write model "${path}": ${message}`, { cause: err, path });
  }
  const parameterCount = plans.reduce((sum, plan) => sum + plan.dims.reduce((a, b) => a * b, 1), 0);
  return { path, fileSize: written, parameterCount, vocabSize: vocab.tokens.length, params };
}
