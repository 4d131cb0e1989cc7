import { describe, expect, it } from "vitest";
import { ByteWriter, fromFloat16Bits, hashSeed, Mulberry32, quantizeQ8_0, toFloat16Bits, writeValue } from "./encode.ts";
import { GgufError, GgufValueType } from "./format.ts";

describe("toFloat16Bits", () => {
  it("encodes exact values, rounds to nearest even and saturates", () => {
    expect(toFloat16Bits(0)).toBe(0);
    expect(toFloat16Bits(-0)).toBe(0x8000);
    expect(toFloat16Bits(1)).toBe(0x3c00);
    expect(toFloat16Bits(-2)).toBe(0xc000);
    expect(toFloat16Bits(65504)).toBe(0x7bff);
    expect(toFloat16Bits(70000)).toBe(0x7c00);
    expect(toFloat16Bits(Number.NEGATIVE_INFINITY)).toBe(0xfc00);
    expect(toFloat16Bits(0.1)).toBe(0x2e66);
    expect(toFloat16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(toFloat16Bits(2 ** -26)).toBe(0);
    expect(toFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie: to even
    expect(toFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie: to even
    expect(Number.isNaN(fromFloat16Bits(toFloat16Bits(Number.NaN)))).toBe(true);
  });

  it("round-trips every finite half value", () => {
    const mismatches: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      if ((bits & 0x7c00) === 0x7c00) continue; // Inf and NaN
      if (toFloat16Bits(fromFloat16Bits(bits)) !== bits) mismatches.push(bits);
    }
    expect(mismatches).toEqual([]);
  });
});

describe("quantizeQ8_0", () => {
  it("writes a float16 scale and 32 rounded bytes per block", () => {
    const values = new Float32Array(64);
    for (let i = 0; i < 32; i++) values[i] = (i - 16) / 16; // max |x| = 1
    const out = new Uint8Array(68);
    expect(quantizeQ8_0(values, out, 0)).toBe(68);
    const scale = fromFloat16Bits(out[0]! | (out[1]! << 8));
    expect(scale).toBeCloseTo(1 / 127, 4);
    const q = new Int8Array(out.buffer, 2, 32);
    expect(q[0]).toBe(-127);
    expect(q[16]).toBe(0);
    expect(q[24]).toBe(64); // 0.5 * 127 = 63.5 rounds away from zero
    // an all-zero block has scale 0 and zero bytes
    expect([...out.subarray(34, 68)].every((b) => b === 0)).toBe(true);
  });
});

describe("Mulberry32 and hashSeed", () => {
  it("are deterministic and seed-sensitive", () => {
    const a = new Mulberry32(hashSeed(1, "x"));
    const b = new Mulberry32(hashSeed(1, "x"));
    const c = new Mulberry32(hashSeed(2, "x"));
    const sa = Array.from({ length: 8 }, () => a.nextUint32());
    expect(Array.from({ length: 8 }, () => b.nextUint32())).toEqual(sa);
    expect(Array.from({ length: 8 }, () => c.nextUint32())).not.toEqual(sa);
    expect(hashSeed(1, "blk.0.attn_q.weight")).not.toBe(hashSeed(1, "blk.0.attn_k.weight"));
    const r = new Mulberry32(7);
    let sum = 0;
    for (let i = 0; i < 10_000; i++) sum += r.next();
    expect(sum / 10_000).toBeGreaterThan(0.48);
    expect(sum / 10_000).toBeLessThan(0.52);
  });
});

describe("writeValue", () => {
  it("encodes every scalar type little-endian and rejects mismatched values", () => {
    const w = new ByteWriter();
    writeValue(w, GgufValueType.INT16, -2);
    writeValue(w, GgufValueType.UINT64, 2n ** 63n);
    writeValue(w, GgufValueType.ARRAY, ["a", "bc"], GgufValueType.STRING);
    const b = Buffer.from(w.toUint8Array());
    expect(b.readInt16LE(0)).toBe(-2);
    expect(b.readBigUInt64LE(2)).toBe(2n ** 63n);
    expect(b.readUInt32LE(10)).toBe(GgufValueType.STRING);
    expect(b.readBigUInt64LE(14)).toBe(2n);
    expect(() => writeValue(w, GgufValueType.STRING, 3)).toThrow(GgufError);
    expect(() => writeValue(w, GgufValueType.ARRAY, [1], GgufValueType.ARRAY)).toThrow(/scalar item type/);
  });
});
