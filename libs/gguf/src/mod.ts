/**
 * `@atlas/gguf`: GGUF model files without downloads. Generates small llama-architecture models
 * with deterministic random weights (for tests and benchmarks), reads GGUF headers, validates a
 * model before llama.cpp loads it (some bad files abort the process), and fingerprints models.
 *
 * @module
 */

export { demoModelFileName, type EnsureDemoModelOptions, ensureDemoModel } from "./demo.ts";
export { GgmlType, GgufError, GgufErrorCode, type GgufErrorOptions, GgufValueType, TokenType } from "./format.ts";
export {
  type GgufHeader,
  type GgufTensorInfo,
  type GgufValue,
  type GgufValueTypeInfo,
  type ModelFingerprintOptions,
  type ModelInfo,
  type ModelValidation,
  modelFingerprint,
  type ReadGgufHeaderOptions,
  readGgufHeader,
  tensorByteSize,
  type ValidateLlamaModelOptions,
  validateLlamaModel,
} from "./reader.ts";
export { type GgufMetadataEntry, type RewriteGgufMetadataOptions, rewriteGgufMetadata } from "./rewrite.ts";
export { buildVocabulary, SPACE_MARKER, SpecialTokenId, type Vocabulary } from "./vocab.ts";
export {
  CHATML_TEMPLATE,
  GENERATOR_VERSION,
  type LlamaModelParams,
  ModelPreset,
  PRESET_DEFAULTS,
  resolveLlamaModelParams,
  WeightType,
  type WriteLlamaModelOptions,
  type WrittenLlamaModel,
  writeLlamaModel,
} from "./writer.ts";
