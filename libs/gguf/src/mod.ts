/**
 * `@atlas/gguf`: GGUF model files without downloads. Generates small llama-architecture models
 * with deterministic random weights (for tests and benchmarks), reads GGUF headers, validates a
 * model before llama.cpp loads it (some bad files abort the process), and fingerprints models.
 *
 * @module
 */

export {
  CHAT_TEMPLATES,
  ChatTemplateFamily,
  type ChatTemplateSpec,
  type ChatTemplateToken,
  chatTemplateSpec,
  LLAMA_3_1_TEMPLATE,
  QWEN_2_5_TEMPLATE,
} from "./chat_templates.ts";
export { demoModelFileName, type EnsureDemoModelOptions, ensureDemoModel } from "./demo.ts";
export { type ModelFingerprintOptions, modelFingerprint } from "./fingerprint.ts";
export {
  GgmlType,
  GgufError,
  GgufErrorCode,
  type GgufErrorOptions,
  type GgufValue,
  GgufValueType,
  TokenType,
} from "./format.ts";
export { CHATML_TEMPLATE, GENERATOR_VERSION } from "./model_header.ts";
export {
  type LlamaModelParams,
  ModelPreset,
  PRESET_DEFAULTS,
  resolveLlamaModelParams,
  WeightType,
  type WriteLlamaModelOptions,
} from "./params.ts";
export {
  type GgufHeader,
  type GgufTensorInfo,
  type GgufValueTypeInfo,
  type ReadGgufHeaderOptions,
  readGgufHeader,
  tensorByteSize,
} from "./reader.ts";
export { type GgufMetadataEntry, type RewriteGgufMetadataOptions, rewriteGgufMetadata } from "./rewrite.ts";
export { type ModelInfo, type ModelValidation, type ValidateLlamaModelOptions, validateLlamaModel } from "./validate.ts";
export { buildVocabulary, SPACE_MARKER, SpecialTokenId, type SpecialTokenIds, type Vocabulary } from "./vocab.ts";
export { type WrittenLlamaModel, writeLlamaModel } from "./writer.ts";
