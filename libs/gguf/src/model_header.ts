/**
 * The header of a generated model: the GGUF magic and version, its metadata (hyperparameters,
 * tokenizer, chat template, generator stamp) and its tensor infos with aligned data offsets.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { ByteWriter, type GgufTypedValue, writeKeyValue } from "./encode.ts";
import { alignUp, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgufValueType } from "./format.ts";
import { type LlamaModelParams, WeightType } from "./params.ts";
import { buildVocabulary, SpecialTokenId } from "./vocab.ts";
import { type TensorPlan, tensorBytes } from "./weights.ts";

/** Version of the generator, stored as `atlas.generator`; bumped whenever output bytes change. */
export const GENERATOR_VERSION = "atlas-gguf/1";

/**
 * A ChatML chat template (Jinja). node-llama-cpp's `chatWrapper: "auto"` recognizes it as
 * `ChatMLChatWrapper`; llama.cpp's own template detection does too.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function fileTypeOf(t: WeightType): number {
  // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7
  return t === WeightType.F32 ? 0 : t === WeightType.F16 ? 1 : 7;
}

/** The header bytes (padded to the data alignment) and each tensor's offset in the data. */
export function buildHeader(p: LlamaModelParams, plans: readonly TensorPlan[]): { header: Uint8Array; offsets: number[] } {
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
