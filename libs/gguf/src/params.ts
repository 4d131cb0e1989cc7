/**
 * Parameters of generated models: the presets (`tiny`, `bench`), weight types, the options of
 * `writeLlamaModel` (writer.ts) and their resolution against a preset, with checks.
 *
 * @module
 */
import { CHAT_TEMPLATES, type ChatTemplateFamily } from "./chat_templates.ts";
import { GgufError, GgufErrorCode } from "./format.ts";

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
  /** Chat template family: template, special tokens, architecture (chat_templates.ts). */
  readonly chatTemplate: ChatTemplateFamily;
  /** Logit bias of the eos token (`<|im_end|>`, `<|eot_id|>`), in units of the standard deviation of the other logits. */
  readonly eosBias: number;
  /** Logit bias of the 256 byte tokens, in the same units. */
  readonly byteBias: number;
}

/** Options for `writeLlamaModel` (writer.ts). Unset fields come from the preset. */
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
   * The chat template the model carries, with the special tokens it uses. Default `"chatml"`
   * (minimal ChatML, no tools). `"llama3.1"` and `"qwen2.5"` embed those families' real templates
   * with function calling (a `qwen2.5` model has architecture `qwen2`, as the real ones do).
   */
  chatTemplate?: ChatTemplateFamily;
  /**
   * Logit bias of the eos token (`<|im_end|>`; `<|eot_id|>` for llama3.1) in standard deviations of the other logits; higher ends replies
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

type PresetDefaults = Omit<LlamaModelParams, "preset" | "name" | "seed" | "chatTemplate">;

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
    chatTemplate: options.chatTemplate ?? "chatml",
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
  if (!Object.hasOwn(CHAT_TEMPLATES, p.chatTemplate)) {
    bad(
      `unknown chat template "${String(p.chatTemplate)}": use ${Object.keys(CHAT_TEMPLATES)
        .map((f) => `"${f}"`)
        .join(", ")}`,
    );
  }
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
