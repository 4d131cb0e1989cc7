/**
 * `validateLlamaModel`: checks, from the header alone, that llama.cpp can load a GGUF model
 * without crashing: required hyperparameters, tokenizer arrays, tensor types, offsets and sizes,
 * and for `llama` (and `qwen2`, the same tensors) every expected tensor's shape.
 *
 * @module
 */
import { alignUp, GGML_TYPE_TRAITS, type GgufValue, GgufValueType } from "./format.ts";
import { type GgufHeader, readGgufHeader } from "./reader.ts";

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

/** Architectures checked like `llama`: the same hyperparameters and tensors (`qwen2`'s q/k/v biases are optional). */
const LLAMA_LIKE_ARCHITECTURES = new Set(["llama", "qwen2"]);

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
 * For `llama` and `qwen2` it also checks every expected tensor and its shape; for other architectures
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

  const llamaLike = LLAMA_LIKE_ARCHITECTURES.has(arch);
  if (llamaLike) checkLlamaHyperparameters(m, arch, problems, embeddingLength, headCount, headCountKv);

  const vocabSize = checkTokenizer(header, arch, problems, warnings);
  checkTensors(header, problems);
  const shapeKnown = embeddingLength > 0 && blockCount > 0 && (headCount ?? 0) > 0 && (feedForwardLength ?? 0) > 0 && vocabSize > 0;
  if (llamaLike && shapeKnown) {
    checkLlamaTensors(header, arch, problems, {
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
  arch: string,
  problems: string[],
  embeddingLength: number,
  headCount: number | null,
  headCountKv: number | null,
): void {
  const eps = m[`${arch}.attention.layer_norm_rms_epsilon`];
  if (typeof eps !== "number" || !(eps > 0)) {
    problems.push(`Metadata "${arch}.attention.layer_norm_rms_epsilon" is ${describe(eps)}, expected a positive number`);
  }
  if (headCount === null || embeddingLength === 0) return;
  const keyLength = m[`${arch}.attention.key_length`];
  const headDim = typeof keyLength === "number" ? keyLength : embeddingLength / headCount;
  if (keyLength === undefined && embeddingLength % headCount !== 0) {
    problems.push(`Embedding length ${embeddingLength} is not divisible by head count ${headCount}`);
  }
  if (headCountKv !== null && headCountKv > 0 && headCount % headCountKv !== 0) {
    problems.push(`Head count ${headCount} is not divisible by key/value head count ${headCountKv}`);
  }
  const rot = m[`${arch}.rope.dimension_count`];
  if (rot !== undefined && rot !== headDim) {
    problems.push(`Metadata "${arch}.rope.dimension_count" is ${describe(rot)}, expected the head dimension ${headDim}`);
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

/** Checks that every tensor a llama (or qwen2) model needs is present with the right shape. */
function checkLlamaTensors(header: GgufHeader, arch: string, problems: string[], s: LlamaShape): void {
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  const m = header.metadata;
  const d = s.embeddingLength;
  const num = (key: string): number | undefined => {
    const v = m[`${arch}.${key}`];
    return typeof v === "number" ? v : undefined;
  };
  const keyLength = num("attention.key_length") ?? d / s.headCount;
  const valueLength = num("attention.value_length") ?? keyLength;
  const experts = num("expert_count") ?? 0;
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
