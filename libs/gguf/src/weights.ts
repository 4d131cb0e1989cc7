/**
 * The tensors of a generated llama model: their names, shapes and types, the deterministic
 * random weights of each row (including the logit-bias channel that keeps output printable and
 * replies finite) and how a row is encoded (F32, F16, Q8_0).
 *
 * @module
 */
import { hashSeed, Mulberry32, quantizeQ8_0, toFloat16Bits } from "./encode.ts";
import { GgmlType, TokenType } from "./format.ts";
import { type LlamaModelParams, WeightType } from "./params.ts";
import type { Vocabulary } from "./vocab.ts";

// Bias of special tokens other than the eos token (control and user-defined): they are never generated.
const CONTROL_BIAS = -30;

/** One tensor to write: shape in ggml order (`dims[0]` is the row length) and a row generator. */
export interface TensorPlan {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: GgmlType;
  /** Fills `row` with row number `index`; called for rows 0, 1, 2, ... in order. */
  readonly fillRow: (row: Float32Array, index: number) => void;
}

/** Bytes of one row of `length` elements of `type`. */
export function rowBytes(type: GgmlType, length: number): number {
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

/** The tensors of a model with parameters `p`; `vocabBiases` are the logit biases of the tokens (see above). */
export function planTensors(p: LlamaModelParams, vocabBiases: Float64Array): TensorPlan[] {
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

/** Logit bias of each token, in standard deviations of the other logits. */
export function tokenBiases(vocab: Pick<Vocabulary, "types" | "special">, p: LlamaModelParams): Float64Array {
  const biases = new Float64Array(vocab.types.length);
  vocab.types.forEach((type, id) => {
    if (id === vocab.special.eos) biases[id] = p.eosBias;
    else if (type === TokenType.BYTE) biases[id] = p.byteBias;
    else if (type !== TokenType.NORMAL) biases[id] = CONTROL_BIAS;
  });
  return biases;
}

/** Bytes of a tensor's data. */
export function tensorBytes(plan: TensorPlan): number {
  const rows = plan.dims.slice(1).reduce((a, b) => a * b, 1);
  return rowBytes(plan.type, plan.dims[0]!) * rows;
}

/** Encodes `row` as `type` into `out` at `offset`; returns the offset after the last byte written. */
export function encodeRow(type: GgmlType, row: Float32Array, out: Uint8Array, offset: number): number {
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
