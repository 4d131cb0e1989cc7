/**
 * Low-level encoders used by the writer: a deterministic PRNG, float16 conversion, Q8_0
 * quantization and a little-endian byte builder for GGUF headers.
 *
 * @module
 */
import { GgufError, GgufErrorCode, type GgufValue, GgufValueType } from "./format.ts";

/** A seeded 32-bit PRNG (mulberry32): fast, small state, same sequence on every platform. */
export class Mulberry32 {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The next value, uniform over [0, 2^32). */
  nextUint32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** The next value, uniform over [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }
}

/** A 32-bit hash (FNV-1a, then a murmur3 finalizer) of a seed and a string, to seed a PRNG. */
export function hashSeed(seed: number, text: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  h ^= seed >>> 16;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Converts a float to IEEE 754 half precision bits, rounding to nearest even. */
export function toFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // Inf or NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow to zero
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const midpoint = 1 << (shift - 1);
    if (rem > midpoint || (rem === midpoint && (half & 1) !== 0)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half++; // a carry into the exponent is correct
  return sign | half;
}

/** Converts IEEE 754 half precision bits to a number. */
export function fromFloat16Bits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : Number.NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Bytes of one Q8_0 block: a float16 scale and 32 signed bytes. */
export const Q8_0_BLOCK_BYTES = 34;

/**
 * Quantizes `values` (a multiple of 32 long) to Q8_0 into `out` at `offset`, exactly as
 * ggml's `quantize_row_q8_0_ref`. Returns the offset after the last byte written.
 */
export function quantizeQ8_0(values: Float32Array, out: Uint8Array, offset: number): number {
  let o = offset;
  for (let b = 0; b < values.length; b += 32) {
    let amax = 0;
    for (let i = 0; i < 32; i++) {
      const a = Math.abs(values[b + i]!);
      if (a > amax) amax = a;
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const dh = toFloat16Bits(d);
    out[o] = dh & 0xff;
    out[o + 1] = dh >>> 8;
    o += 2;
    for (let i = 0; i < 32; i++) {
      // roundf: half away from zero
      const x = Math.fround(values[b + i]! * id);
      const q = x < 0 ? -Math.round(-x) : Math.round(x);
      out[o++] = q & 0xff;
    }
  }
  return o;
}

/** A growable little-endian byte buffer for GGUF headers. */
export class ByteWriter {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  #len = 0;

  /** Bytes written so far. */
  get length(): number {
    return this.#len;
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  /** Appends an unsigned 8-bit integer. */
  u8(v: number): void {
    this.#reserve(1);
    this.#view.setUint8(this.#len, v);
    this.#len += 1;
  }

  /** Appends a signed 8-bit integer. */
  i8(v: number): void {
    this.#reserve(1);
    this.#view.setInt8(this.#len, v);
    this.#len += 1;
  }

  /** Appends an unsigned 16-bit integer. */
  u16(v: number): void {
    this.#reserve(2);
    this.#view.setUint16(this.#len, v, true);
    this.#len += 2;
  }

  /** Appends a signed 16-bit integer. */
  i16(v: number): void {
    this.#reserve(2);
    this.#view.setInt16(this.#len, v, true);
    this.#len += 2;
  }

  /** Appends a signed 64-bit integer. */
  i64(v: number | bigint): void {
    this.#reserve(8);
    this.#view.setBigInt64(this.#len, BigInt(v), true);
    this.#len += 8;
  }

  /** Appends a 64-bit float. */
  f64(v: number): void {
    this.#reserve(8);
    this.#view.setFloat64(this.#len, v, true);
    this.#len += 8;
  }

  /** Appends a signed 32-bit integer. */
  i32(v: number): void {
    this.#reserve(4);
    this.#view.setInt32(this.#len, v, true);
    this.#len += 4;
  }

  /** Appends an unsigned 32-bit integer. */
  u32(v: number): void {
    this.#reserve(4);
    this.#view.setUint32(this.#len, v, true);
    this.#len += 4;
  }

  /** Appends an unsigned 64-bit integer. */
  u64(v: number | bigint): void {
    this.#reserve(8);
    this.#view.setBigUint64(this.#len, BigInt(v), true);
    this.#len += 8;
  }

  /** Appends a 32-bit float. */
  f32(v: number): void {
    this.#reserve(4);
    this.#view.setFloat32(this.#len, v, true);
    this.#len += 4;
  }

  /** Appends raw bytes. */
  bytes(b: Uint8Array): void {
    this.#reserve(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  /** Appends a GGUF string: u64 byte length, then UTF-8 bytes. */
  string(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.bytes(b);
  }

  /** Appends zero bytes up to a multiple of `alignment`. */
  pad(alignment: number): void {
    while (this.#len % alignment !== 0) this.u8(0);
  }

  /** A copy of the bytes written. */
  toUint8Array(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

/** A metadata value with its stored type, as the writer takes it. */
export interface GgufTypedValue {
  readonly type: GgufValueType;
  /** Element type, for arrays. */
  readonly itemType?: GgufValueType;
  readonly value: GgufValue;
}

function bad(what: string): never {
  throw new GgufError(GgufErrorCode.invalidOptions, `Cannot encode metadata: ${what}`);
}

/** Appends one value of `type` (arrays: elements of `itemType`, which must not be an array). */
export function writeValue(w: ByteWriter, type: GgufValueType, value: GgufValue, itemType?: GgufValueType): void {
  const num = (): number | bigint => {
    if (typeof value !== "number" && typeof value !== "bigint") bad(`"${String(value)}" is not a number`);
    return value;
  };
  switch (type) {
    case GgufValueType.UINT8:
      return w.u8(Number(num()));
    case GgufValueType.INT8:
      return w.i8(Number(num()));
    case GgufValueType.UINT16:
      return w.u16(Number(num()));
    case GgufValueType.INT16:
      return w.i16(Number(num()));
    case GgufValueType.UINT32:
      return w.u32(Number(num()));
    case GgufValueType.INT32:
      return w.i32(Number(num()));
    case GgufValueType.FLOAT32:
      return w.f32(Number(num()));
    case GgufValueType.UINT64:
      return w.u64(num());
    case GgufValueType.INT64:
      return w.i64(num());
    case GgufValueType.FLOAT64:
      return w.f64(Number(num()));
    case GgufValueType.BOOL:
      if (typeof value !== "boolean") bad(`"${String(value)}" is not a boolean`);
      return w.u8(value ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof value !== "string") bad(`"${String(value)}" is not a string`);
      return w.string(value);
    case GgufValueType.ARRAY: {
      if (!Array.isArray(value)) bad(`"${String(value)}" is not an array`);
      if (itemType === undefined || itemType === GgufValueType.ARRAY) bad("arrays need a scalar item type");
      w.u32(itemType);
      w.u64(value.length);
      for (const item of value) writeValue(w, itemType, item);
      return;
    }
    default:
      bad(`unknown value type "${String(type)}"`);
  }
}

/** Appends one metadata key-value pair. */
export function writeKeyValue(w: ByteWriter, key: string, v: GgufTypedValue): void {
  w.string(key);
  w.u32(v.type);
  writeValue(w, v.type, v.value, v.itemType);
}
