/**
 * The header of a generated model: the GGUF magic and version, its metadata (hyperparameters,
 * tokenizer, chat template, generator stamp) and its tensor infos with aligned data offsets.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { chatTemplateSpec } from "./chat_templates.ts";
import { ByteWriter, type GgufTypedValue, writeKeyValue } from "./encode.ts";
import { alignUp, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgufValueType } from "./format.ts";
import { type LlamaModelParams, WeightType } from "./params.ts";
import { buildVocabulary } from "./vocab.ts";
import { type TensorPlan, tensorBytes } from "./weights.ts";

export { CHATML_TEMPLATE } from "./chat_templates.ts";

/** Version of the generator, stored as `atlas.generator`; bumped whenever output bytes change. */
export const GENERATOR_VERSION = "atlas-gguf/1";

function fileTypeOf(t: WeightType): number {
  // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7
  return t === WeightType.F32 ? 0 : t === WeightType.F16 ? 1 : 7;
}

function entryIf(present: boolean, key: string, value: GgufTypedValue): Array<[string, GgufTypedValue]> {
  return present ? [[key, value]] : [];
}

function optionalId(key: string, id: number | undefined): Array<[string, GgufTypedValue]> {
  return id === undefined ? [] : [[key, { type: GgufValueType.UINT32, value: id }]];
}

/** The header bytes (padded to the data alignment) and each tensor's offset in the data. */
export function buildHeader(p: LlamaModelParams, plans: readonly TensorPlan[]): { header: Uint8Array; offsets: number[] } {
  const spec = chatTemplateSpec(p.chatTemplate);
  const vocab = buildVocabulary(p.chatTemplate);
  const arch = spec.architecture;
  const w = new ByteWriter();
  w.bytes(Buffer.from(GGUF_MAGIC, "latin1"));
  w.u32(GGUF_VERSION);
  w.u64(plans.length);

  const U32 = GgufValueType.UINT32;
  const kv: Array<[string, GgufTypedValue]> = [
    ["general.architecture", { type: GgufValueType.STRING, value: arch }],
    ["general.name", { type: GgufValueType.STRING, value: p.name }],
    ["general.alignment", { type: U32, value: GGUF_DEFAULT_ALIGNMENT }],
    ["general.file_type", { type: U32, value: fileTypeOf(p.tensorType) }],
    ["general.quantization_version", { type: U32, value: 2 }],
    [`${arch}.context_length`, { type: U32, value: p.contextLength }],
    [`${arch}.embedding_length`, { type: U32, value: p.embeddingLength }],
    [`${arch}.block_count`, { type: U32, value: p.blockCount }],
    [`${arch}.feed_forward_length`, { type: U32, value: p.feedForwardLength }],
    [`${arch}.attention.head_count`, { type: U32, value: p.headCount }],
    [`${arch}.attention.head_count_kv`, { type: U32, value: p.headCountKv }],
    [`${arch}.attention.layer_norm_rms_epsilon`, { type: GgufValueType.FLOAT32, value: 1e-5 }],
    [`${arch}.rope.dimension_count`, { type: U32, value: p.embeddingLength / p.headCount }],
    [`${arch}.rope.freq_base`, { type: GgufValueType.FLOAT32, value: 10000 }],
    [`${arch}.vocab_size`, { type: U32, value: vocab.tokens.length }],
    ["tokenizer.ggml.model", { type: GgufValueType.STRING, value: "llama" }],
    ["tokenizer.ggml.tokens", { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: [...vocab.tokens] }],
    ["tokenizer.ggml.scores", { type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value: [...vocab.scores] }],
    ["tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value: [...vocab.types] }],
    ["tokenizer.ggml.bos_token_id", { type: U32, value: vocab.special.bos }],
    ["tokenizer.ggml.eos_token_id", { type: U32, value: vocab.special.eos }],
    ["tokenizer.ggml.eot_token_id", { type: U32, value: vocab.special.eot }],
    ...optionalId("tokenizer.ggml.eom_token_id", vocab.special.eom),
    ...optionalId("tokenizer.ggml.padding_token_id", vocab.special.pad),
    ["tokenizer.ggml.unknown_token_id", { type: U32, value: vocab.special.unk }],
    ["tokenizer.ggml.add_bos_token", { type: GgufValueType.BOOL, value: spec.addBos }],
    ["tokenizer.ggml.add_eos_token", { type: GgufValueType.BOOL, value: false }],
    ["tokenizer.ggml.add_space_prefix", { type: GgufValueType.BOOL, value: false }],
    ["tokenizer.chat_template", { type: GgufValueType.STRING, value: spec.template }],
    ["atlas.generator", { type: GgufValueType.STRING, value: GENERATOR_VERSION }],
    ["atlas.preset", { type: GgufValueType.STRING, value: p.preset }],
    ["atlas.seed", { type: U32, value: p.seed }],
    ["atlas.weight_std", { type: GgufValueType.FLOAT32, value: p.weightStd }],
    ["atlas.eos_bias", { type: GgufValueType.FLOAT32, value: p.eosBias }],
    ["atlas.byte_bias", { type: GgufValueType.FLOAT32, value: p.byteBias }],
    // Absent for ChatML, so that ChatML models stay byte-identical to those made before families existed.
    ...entryIf(p.chatTemplate !== "chatml", "atlas.chat_template", { type: GgufValueType.STRING, value: p.chatTemplate }),
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
