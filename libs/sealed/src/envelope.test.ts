import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { type Codec, compress, decompress, hasZstd, resolveCodec } from "./codec.ts";
import { isSealed, MAGIC, open, readHeader, SealedError, seal } from "./envelope.ts";
import { keyCheckValue, loadMasterKeys, parseMasterKey } from "./master.ts";
import { Sealer } from "./sealer.ts";

const text = new TextEncoder().encode(
  JSON.stringify({ messages: Array.from({ length: 50 }, (_, i) => `the secret word is marmalade ${i}`) }),
);
const key = { id: "t.acme:1", key: randomBytes(32) };
const keyOf = (id: string) => (id === key.id ? key.key : undefined);
const codecs: Codec[] = ["none", "gzip", "brotli", ...(hasZstd() ? (["zstd"] as Codec[]) : [])];

function expectSealedError(f: () => unknown, code: string): void {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SealedError);
    expect((err as SealedError).code).toBe(code);
    return;
  }
  throw new Error("expected a SealedError");
}

describe("codecs", () => {
  it.each(codecs)("%s round-trips", (codec) => {
    const packed = compress(codec, text);
    expect(Buffer.from(decompress(codec, packed))).toEqual(Buffer.from(text));
    if (codec !== "none") expect(packed.length).toBeLessThan(text.length / 3);
  });

  it("auto picks zstd where Node has it, else brotli; zstd without it is a clear error", () => {
    expect(resolveCodec("auto")).toBe(hasZstd() ? "zstd" : "brotli");
    if (!hasZstd()) expect(() => resolveCodec("zstd")).toThrow(/Node >= 22.15/);
  });
});

describe("envelope", () => {
  it.each(codecs)("seals and opens with codec %s, encrypted or not, recording the codec in the header", (codec) => {
    for (const k of [undefined, key]) {
      const sealed = seal(text, { codec, key: k, context: "acme/s1" });
      expect(isSealed(sealed)).toBe(true);
      expect(readHeader(sealed)).toMatchObject({ version: 1, codec, encrypted: k !== undefined, keyId: k?.id ?? null });
      expect(Buffer.from(open(sealed, keyOf, "acme/s1"))).toEqual(Buffer.from(text));
    }
  });

  it("hides the plaintext when encrypted (codec none: no compression to hide behind)", () => {
    const sealed = Buffer.from(seal(text, { codec: "none", key }));
    expect(sealed.includes("marmalade")).toBe(false);
    expect(Buffer.from(seal(text, { codec: "none" })).includes("marmalade")).toBe(true);
  });

  it("refuses every single flipped byte of an encrypted envelope (header, nonce, body, tag)", () => {
    const sealed = seal(text.subarray(0, 200), { codec: "gzip", key, context: "c" });
    for (let i = 0; i < sealed.length; i++) {
      const bad = Uint8Array.from(sealed);
      bad[i] = (bad[i] as number) ^ 0x01;
      expect(() => open(bad, keyOf, "c"), `byte ${i}`).toThrow(SealedError);
    }
  });

  it("refuses another context, another key and an unknown key, each with its own code", () => {
    const sealed = seal(text, { codec: "brotli", key, context: "acme/s1" });
    expectSealedError(() => open(sealed, keyOf, "acme/s2"), "tampered");
    expectSealedError(() => open(sealed, () => randomBytes(32), "acme/s1"), "tampered");
    expectSealedError(() => open(sealed, () => undefined, "acme/s1"), "unknown_key");
  });

  it("tells envelopes from plain data and refuses truncated or unknown versions", () => {
    expect(isSealed(text)).toBe(false);
    expect(isSealed(Uint8Array.from([...MAGIC]))).toBe(false);
    const sealed = seal(text, { codec: "gzip", key });
    expectSealedError(() => open(sealed.subarray(0, 20), keyOf), "format");
    const v2 = Uint8Array.from(sealed);
    v2[4] = 2;
    expectSealedError(() => readHeader(v2), "format");
  });
});

describe("master keys", () => {
  const k1 = randomBytes(32).toString("base64");
  const k2 = randomBytes(32).toString("base64");

  it("reads ATLAS_MEMORY_KEY, a key file (current first) and ATLAS_MEMORY_KEY_PREVIOUS", () => {
    expect(loadMasterKeys({})).toBeUndefined();
    const env = loadMasterKeys({ ATLAS_MEMORY_KEY: k1, ATLAS_MEMORY_KEY_PREVIOUS: k2 });
    expect(env?.current.kcv).toBe(keyCheckValue(Buffer.from(k1, "base64")));
    expect(env?.previous.map((k) => k.kcv)).toEqual([keyCheckValue(Buffer.from(k2, "base64"))]);
    const file = loadMasterKeys({ ATLAS_MEMORY_KEY_FILE: "/keys" }, () => `# rotated today\n${k2}\n\n${k1}\n`);
    expect(file?.current.kcv).toBe(env?.previous[0]?.kcv);
    expect(file?.previous[0]?.kcv).toBe(env?.current.kcv);
  });

  it("refuses keys that are not 32 bytes of base64, both sources at once, and a previous key alone", () => {
    expect(() => parseMasterKey("c2hvcnQ=", "ATLAS_MEMORY_KEY")).toThrow(/32 bytes in base64/);
    expect(() => parseMasterKey(`${k1.slice(0, -2)}!=`, "ATLAS_MEMORY_KEY")).toThrow(/32 bytes in base64/);
    expect(() => loadMasterKeys({ ATLAS_MEMORY_KEY: k1, ATLAS_MEMORY_KEY_FILE: "/k" })).toThrow(/not both/);
    expect(() => loadMasterKeys({ ATLAS_MEMORY_KEY_PREVIOUS: k1 })).toThrow(/without ATLAS_MEMORY_KEY/);
    expect(() =>
      loadMasterKeys({ ATLAS_MEMORY_KEY_FILE: "/missing" }, () => {
        throw new Error("ENOENT");
      }),
    ).toThrow(/cannot read/);
  });
});

describe("Sealer without a key", () => {
  it("compresses large payloads, stores small ones with codec none, reads plain (old) data as it is", async () => {
    const sealer = new Sealer({ codec: "gzip" });
    const big = await sealer.seal("t.acme", text);
    expect(readHeader(big).codec).toBe("gzip");
    expect(readHeader(await sealer.seal("t.acme", text.subarray(0, 100))).codec).toBe("none");
    expect(Buffer.from(await sealer.open(big))).toEqual(Buffer.from(text));
    expect(Buffer.from(await sealer.open(text))).toEqual(Buffer.from(text));
    expect(sealer.stats).toMatchObject({ sealed: 2, opened: 1, plain_reads: 1 });
  });

  it("refuses encrypted data with a clear error instead of returning ciphertext", async () => {
    const sealed = seal(text, { codec: "gzip", key });
    await expect(new Sealer({ codec: "gzip" }).open(sealed)).rejects.toThrow(/no ATLAS_MEMORY_KEY/);
  });
});

describe("worthCompressing", () => {
  it("compresses small payloads, and large ones only when samples of them shrink", async () => {
    const { worthCompressing, PROBE_FROM_BYTES } = await import("./codec.ts");
    expect(worthCompressing("gzip", randomBytes(1024))).toBe(true); // small: always (cheap)
    expect(worthCompressing("gzip", randomBytes(PROBE_FROM_BYTES * 2))).toBe(false);
    expect(worthCompressing("gzip", Buffer.alloc(PROBE_FROM_BYTES * 2, "ab"))).toBe(true);
    expect(worthCompressing("none", Buffer.alloc(10, "a"))).toBe(false);
    const sealer = new Sealer({ codec: "gzip" });
    expect(readHeader(await sealer.seal("s.kvstate", randomBytes(PROBE_FROM_BYTES * 2))).codec).toBe("none");
  });
});

describe("ATLAS_MEMORY_REQUIRE_SEALED", () => {
  it("needs a master key: a sealer that requires sealed data cannot be made without one", async () => {
    const { unkeyedSealer } = await import("./sealer.ts");
    expect(() => new Sealer({ codec: "gzip", requireSealed: true })).toThrow(/ATLAS_MEMORY_REQUIRE_SEALED is set but neither/);
    expect(() => unkeyedSealer({ ATLAS_MEMORY_COMPRESSION: "gzip", ATLAS_MEMORY_REQUIRE_SEALED: true })).toThrow(SealedError);
    expect(unkeyedSealer({ ATLAS_MEMORY_COMPRESSION: "gzip" }).requireSealed).toBe(false);
  });
});
