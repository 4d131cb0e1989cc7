import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { LARGE_ENVELOPE_BYTES, open, openLarge, readHeader, SealedError } from "./envelope.ts";
import {
  isTransitKeyId,
  openTransit,
  sealTo,
  TransitKeyEntry,
  transitKeyEntry,
  transitKeyOf,
  transitKeyPair,
  transitRecipient,
  transitRecipientId,
  transitRecipientOf,
} from "./transit.ts";

const reader = { id: "s.transit:1", key: randomBytes(32) };
const entry = transitKeyEntry(reader);
const recipient = transitRecipient(TransitKeyEntry.parse(JSON.parse(JSON.stringify(entry))));
const plain = new TextEncoder().encode(JSON.stringify({ content: "the secret word is marmalade" }));
/** The reader's key lookup: derives the AES key of a transit id from its own private half. */
const readerKeyOf = (seed: Uint8Array) => (id: string) => (transitRecipientId(id) === reader.id ? transitKeyOf(id, seed) : undefined);

function sealedError(f: () => unknown): SealedError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SealedError);
    return err as SealedError;
  }
  throw new Error("expected a SealedError");
}

describe("transit sealing", () => {
  it("publishes a public key the reader's private half opens, and nothing in the envelope shows the payload", async () => {
    expect(entry).toMatchObject({ v: 1, id: "s.transit:1" });
    expect(entry.public).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // The same private half always publishes the same public key.
    expect(transitKeyEntry(reader).public).toBe(entry.public);
    const sealed = await sealTo(recipient, plain, "append|acme/s1");
    expect(Buffer.from(sealed).includes("marmalade")).toBe(false);
    const h = readHeader(sealed);
    expect(h.encrypted).toBe(true);
    expect(isTransitKeyId(h.keyId as string)).toBe(true);
    expect(transitRecipientId(h.keyId as string)).toBe("s.transit:1");
    expect(Buffer.from(open(sealed, readerKeyOf(reader.key), "append|acme/s1"))).toEqual(Buffer.from(plain));
  });

  it("uses a new ephemeral key for every payload", async () => {
    const a = await sealTo(recipient, plain);
    const b = await sealTo(recipient, plain);
    expect(readHeader(a).keyId).not.toBe(readHeader(b).keyId);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  it("refuses another context, another private key, a changed byte and a malformed ephemeral key", async () => {
    const sealed = await sealTo(recipient, plain, "append|acme/s1");
    expect(sealedError(() => open(sealed, readerKeyOf(reader.key), "append|acme/s2")).code).toBe("tampered");
    expect(sealedError(() => open(sealed, readerKeyOf(randomBytes(32)), "append|acme/s1")).code).toBe("tampered");
    const changed = Buffer.from(sealed);
    changed[changed.length - 20] = (changed[changed.length - 20] as number) ^ 1;
    expect(sealedError(() => open(changed, readerKeyOf(reader.key), "append|acme/s1")).code).toBe("tampered");
    expect(sealedError(() => transitKeyOf("x:s.transit:1:short", reader.key)).code).toBe("format");
    expect(sealedError(() => transitRecipientId("s.transit:1")).code).toBe("format");
  });

  it("seals a large payload in slices, the reader opens it whole", async () => {
    const big = randomBytes(LARGE_ENVELOPE_BYTES * 2 + 17);
    const sealed = await sealTo(recipient, big, "put-1");
    expect(Buffer.from(await openLarge(sealed, readerKeyOf(reader.key), "put-1")).equals(big)).toBe(true);
  });

  it("refuses a published entry that is not a key", () => {
    expect(TransitKeyEntry.safeParse({ ...entry, public: "not a key" }).success).toBe(false);
    expect(TransitKeyEntry.safeParse({ ...entry, extra: 1 }).success).toBe(false);
  });
});

describe("a reply key held in memory", () => {
  it("opens what is sealed to its public half, small or large, and refuses what is sealed to another key", async () => {
    const pair = transitKeyPair("caller:1");
    expect(pair.public).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const to = transitRecipientOf("caller:1", pair.public);
    const small = await sealTo(to, plain, "get-1");
    expect(Buffer.from(await openTransit(small, pair.key, "get-1"))).toEqual(Buffer.from(plain));
    const big = randomBytes(LARGE_ENVELOPE_BYTES + 5);
    expect(Buffer.from(await openTransit(await sealTo(to, big, "get-2"), pair.key, "get-2")).equals(big)).toBe(true);
    const other = transitKeyPair("caller:1");
    await expect(openTransit(small, other.key, "get-1")).rejects.toMatchObject({ code: "tampered" });
    await expect(openTransit(await sealTo(recipient, plain, "get-1"), pair.key, "get-1")).rejects.toMatchObject({ code: "unknown_key" });
  });
});
