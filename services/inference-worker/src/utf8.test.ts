import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { REPLACEMENT_CHARACTER, Utf8StreamDecoder } from "./utf8.ts";

const bytes = (...b: number[]) => Uint8Array.from(b);
const utf8 = (s: string) => new TextEncoder().encode(s);

/** Feeds `parts` one at a time; returns every output (the last one from `end`). */
function decode(parts: Uint8Array[]): string[] {
  const d = new Utf8StreamDecoder();
  return [...parts.map((p) => d.push(p)), d.end()];
}

function isWellFormed(text: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

describe("Utf8StreamDecoder", () => {
  it("holds an emoji split across tokens until it completes", () => {
    const out = decode([utf8("a"), bytes(0xf0), bytes(0x9f, 0x98), bytes(0x80), utf8("b"), new Uint8Array(0)]);
    expect(out).toEqual(["a", "", "", "😀", "b", "", ""]);
  });

  it("emits a two-byte character split in two", () => {
    expect(decode([utf8("caf"), bytes(0xc3), bytes(0xa9), utf8("!")])).toEqual(["caf", "", "é", "!", ""]);
  });

  it("replaces a lone continuation byte", () => {
    expect(decode([utf8("ab"), bytes(0x80), utf8("cd")]).join("")).toBe(`ab${REPLACEMENT_CHARACTER}cd`);
  });

  it("replaces a sequence broken off by an ASCII byte", () => {
    expect(decode([bytes(0xe2, 0x82), utf8("x")]).join("")).toBe(`${REPLACEMENT_CHARACTER}x`);
  });

  it("flushes a truncated lead byte at the end as one U+FFFD", () => {
    const out = decode([utf8("ab"), bytes(0xf0, 0x9f)]);
    expect(out).toEqual(["ab", "", REPLACEMENT_CHARACTER]);
  });

  it("replaces bytes that are never UTF-8", () => {
    expect(decode([bytes(0xff), bytes(0xc0, 0x80), bytes(0xed, 0xa0, 0x80)]).join("")).toBe(REPLACEMENT_CHARACTER.repeat(6));
  });

  it("can be used again after end", () => {
    const d = new Utf8StreamDecoder();
    d.push(bytes(0xf0));
    expect(d.end()).toBe(REPLACEMENT_CHARACTER);
    expect(d.push(utf8("ok"))).toBe("ok");
  });

  it("equals one-shot decoding for any bytes split anywhere, and never splits a surrogate pair", () => {
    const byteArrays = fc.array(
      fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0xf0, 0x9f, 0x98, 0x80, 0xc3, 0xa9, 0xe2, 0x82, 0xac)),
      { maxLength: 64 },
    );
    fc.assert(
      fc.property(byteArrays, fc.array(fc.integer({ min: 0, max: 64 }), { maxLength: 16 }), (all, cuts) => {
        const points = [...new Set(cuts.map((c) => Math.min(c, all.length)))].sort((a, b) => a - b);
        const parts: Uint8Array[] = [];
        let from = 0;
        for (const p of [...points, all.length]) {
          parts.push(Uint8Array.from(all.slice(from, p)));
          from = p;
        }
        const out = decode(parts);
        expect(out.join("")).toBe(new TextDecoder().decode(Uint8Array.from(all)));
        for (const piece of out) expect(isWellFormed(piece)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
