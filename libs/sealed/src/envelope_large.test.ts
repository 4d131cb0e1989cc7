/**
 * Large envelopes (`sealLarge`, `openLarge`, and the `Sealer` that routes payloads from
 * `LARGE_ENVELOPE_BYTES` on to them): the same bytes as `seal`/`open` — each opens what the other
 * sealed, with every codec, encrypted or not — the same refusals, and the event loop turns
 * between slices (counted with a chain of `setImmediate` callbacks, which a one-piece `seal` never
 * lets run).
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { type Codec, hasZstd } from "./codec.ts";
import { LARGE_ENVELOPE_BYTES, open, openLarge, readHeader, SealedError, seal, sealLarge } from "./envelope.ts";
import { Sealer } from "./sealer.ts";

const key = { id: "s.kvstate:1", key: randomBytes(32) };
const keyOf = (id: string) => (id === key.id ? key.key : undefined);
const codecs: Codec[] = ["none", "gzip", "brotli", ...(hasZstd() ? (["zstd"] as Codec[]) : [])];

/** 2.5 slices of half text, half random bytes: it compresses, and is never all one slice. */
const data = Buffer.concat([
  Buffer.alloc(LARGE_ENVELOPE_BYTES + LARGE_ENVELOPE_BYTES / 4, "the secret word is marmalade "),
  randomBytes(LARGE_ENVELOPE_BYTES + LARGE_ENVELOPE_BYTES / 4),
]);

/** How many event-loop turns ran while `work` did. */
async function turnsDuring(work: () => Promise<unknown>): Promise<number> {
  let turns = 0;
  let running = true;
  const spin = () => {
    if (!running) return;
    turns += 1;
    setImmediate(spin);
  };
  setImmediate(spin);
  await work();
  running = false;
  return turns;
}

describe("large envelopes", () => {
  it.each(codecs)("with codec %s, sealLarge makes what open reads and openLarge reads what seal made", async (codec) => {
    for (const k of [undefined, key]) {
      const options = { codec, key: k, context: "acme/s1" };
      const large = await sealLarge(data, options);
      const small = seal(data, options);
      const { length, ...header } = readHeader(large);
      expect(readHeader(small)).toMatchObject(header);
      expect(large.length).toBe(small.length);
      expect(Buffer.from(open(large, keyOf, "acme/s1")).equals(data)).toBe(true);
      expect(Buffer.from(await openLarge(small, keyOf, "acme/s1")).equals(data)).toBe(true);
      expect(Buffer.from(large).includes("marmalade")).toBe(k === undefined && codec === "none");
    }
  });

  it("refuses a flipped byte in any slice or the tag, another context and an unknown key", async () => {
    const sealed = await sealLarge(data, { codec: "none", key, context: "c" });
    for (const at of [40, LARGE_ENVELOPE_BYTES + 3, sealed.length - 20, sealed.length - 1]) {
      const bad = Uint8Array.from(sealed);
      bad[at] = (bad[at] as number) ^ 0x01;
      await expect(openLarge(bad, keyOf, "c"), `byte ${at}`).rejects.toMatchObject({ name: "SealedError", code: "tampered" });
    }
    await expect(openLarge(sealed, keyOf, "d")).rejects.toMatchObject({ code: "tampered" });
    await expect(openLarge(sealed, () => undefined, "c")).rejects.toBeInstanceOf(SealedError);
  });

  it("lets the event loop turn between slices, where a one-piece seal does not", async () => {
    const big = randomBytes(8 * LARGE_ENVELOPE_BYTES);
    const options = { codec: "none" as const, key, context: "c" };
    expect(await turnsDuring(async () => seal(big, options))).toBe(0);
    let sealed: Uint8Array = new Uint8Array(0);
    expect(
      await turnsDuring(async () => {
        sealed = await sealLarge(big, options);
      }),
    ).toBeGreaterThanOrEqual(7);
    expect(await turnsDuring(() => openLarge(sealed, keyOf, "c"))).toBeGreaterThanOrEqual(7);
  });

  it("is what a Sealer uses from LARGE_ENVELOPE_BYTES on", async () => {
    const sealer = new Sealer({ codec: "gzip" });
    let sealed: Uint8Array = new Uint8Array(0);
    expect(
      await turnsDuring(async () => {
        sealed = await sealer.seal("s.kvstate", data, "c");
      }),
    ).toBeGreaterThan(0);
    expect(readHeader(sealed).codec).toBe("gzip");
    expect(Buffer.from(await sealer.open(sealed, "c")).equals(data)).toBe(true);
    const small = await sealer.seal("s.kvstate", data.subarray(0, LARGE_ENVELOPE_BYTES - 1), "c");
    expect(Buffer.from(await sealer.open(small, "c")).equals(data.subarray(0, LARGE_ENVELOPE_BYTES - 1))).toBe(true);
  });
});
