/**
 * Transit sealing: data one service parks in JetStream for another — the api's fallback appends
 * and claim-check transfers, read by persistence — encrypted to a public key, so the writer needs
 * no data key and cannot read back what it wrote.
 *
 * The reader's key pair is an X25519 key whose private half is a data key of the keyring (scope
 * `s.transit` in ATLAS, wrapped by the master key like every other data key, so a master-key
 * rotation leaves it, and its public half, unchanged). Persistence publishes the public half in the
 * key bucket as a {@link TransitKeyEntry}. A writer seals each payload with a fresh ephemeral key
 * pair: the AES-256-GCM key is HKDF-SHA256 of the X25519 shared secret, salted with both public
 * keys. The result is an ordinary envelope (`envelope.ts`) whose key id names the recipient and
 * carries the ephemeral public key:
 *
 * ```
 * x:<recipient data key id>:<ephemeral X25519 public key, base64url>
 * ```
 *
 * so `open` and the `Sealer` read it like any envelope once they can derive the key from the id.
 *
 * @module
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, type KeyObject, randomBytes } from "node:crypto";
import { z } from "zod";
import { type DataKey, openBySize, SealedError, sealBySize } from "./envelope.ts";

/** The DER prefix of a raw X25519 private key (PKCS #8, RFC 8410). */
const PKCS8_X25519 = Buffer.from("302e020100300506032b656e04220420", "hex");
/** What starts the key id of a transit envelope. */
const PREFIX = "x:";
const HKDF_INFO = Buffer.from("atlas transit v1", "utf8");

/** The public half of the transit key, as persistence publishes it (JSON in the key bucket). */
export const TransitKeyEntry = z
  .object({
    v: z.literal(1),
    /** The data key id of the private half, `<scope>:<generation>`. */
    id: z.string().regex(/^[ts]\.[A-Za-z0-9_-]{1,64}:[1-9][0-9]{0,8}$/),
    /** The raw 32-byte X25519 public key, base64url. */
    public: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
    at: z.string(),
  })
  .strict();
/** The public half of the transit key, as published. */
export type TransitKeyEntry = z.infer<typeof TransitKeyEntry>;

/** Whom a writer seals to: a data key id and its X25519 public key (the key object and its raw bytes). */
export interface TransitRecipient {
  id: string;
  publicKey: KeyObject;
  raw: Uint8Array;
}

/** A reader's private half as a key object, with its raw public key: made once per data key. */
const readers = new WeakMap<Uint8Array, { privateKey: KeyObject; raw: Buffer }>();

function privateKeyOf(seed: Uint8Array): KeyObject {
  if (seed.length !== 32) throw new SealedError("format", "a transit key is 32 bytes");
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519, seed]), format: "der", type: "pkcs8" });
}

/** The raw 32 bytes of an X25519 public key (through JWK: a tenth of the time of DER here). */
function rawPublic(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: "jwk" }).x as string, "base64url");
}

function publicKeyOf(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" });
}

/** The entry that publishes the public half of the transit key `key` (the data key is its private half). */
export function transitKeyEntry(key: DataKey, at = new Date()): TransitKeyEntry {
  return { v: 1, id: key.id, public: rawPublic(createPublicKey(privateKeyOf(key.key))).toString("base64url"), at: at.toISOString() };
}

/** The recipient a published entry names. */
export function transitRecipient(entry: TransitKeyEntry): TransitRecipient {
  return transitRecipientOf(entry.id, entry.public);
}

/** A recipient from its key id and raw public key (base64url). */
export function transitRecipientOf(id: string, publicKey: string): TransitRecipient {
  const raw = Buffer.from(publicKey, "base64url");
  if (raw.length !== 32) throw new SealedError("format", "an X25519 public key is 32 bytes");
  return { id, publicKey: publicKeyOf(raw), raw };
}

/**
 * A new key pair held in memory only (the api's, for replies parked for it): its private half as
 * a data key named `id`, and its public half (base64url) to hand to the sender.
 */
export function transitKeyPair(id: string): { key: DataKey; public: string } {
  const key = { id, key: new Uint8Array(randomBytes(32)) };
  return { key, public: transitKeyEntry(key).public };
}

/**
 * Opens a transit envelope sealed to `reader` (a data key that is a transit key's private half),
 * bound to `context`; from `LARGE_ENVELOPE_BYTES` (envelope.ts) on, in slices. An envelope sealed to
 * another key is an `unknown_key` error.
 */
export async function openTransit(data: Uint8Array, reader: DataKey, context?: string): Promise<Uint8Array> {
  const keyOf = (id: string) => (isTransitKeyId(id) && transitRecipientId(id) === reader.id ? transitKeyOf(id, reader.key) : undefined);
  return openBySize(data, keyOf, context);
}

/** Whether an envelope's key id is a transit one (the key is derived, not stored). */
export function isTransitKeyId(id: string): boolean {
  return id.startsWith(PREFIX);
}

/** The data key id of the recipient a transit key id names. */
export function transitRecipientId(id: string): string {
  const parts = id.split(":");
  if (parts.length !== 4 || `${parts[0]}:` !== PREFIX) throw new SealedError("format", `"${id}" is not a transit key id`);
  return `${parts[1]}:${parts[2]}`;
}

function derive(shared: Buffer, ephemeral: Buffer, recipient: Buffer): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", shared, Buffer.concat([ephemeral, recipient]), HKDF_INFO, 32));
}

/** A one-use data key sealed to `recipient`: a new ephemeral key pair each call. */
export function transitDataKey(recipient: TransitRecipient): DataKey {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  const ephemeral = rawPublic(publicKey);
  const shared = diffieHellman({ privateKey, publicKey: recipient.publicKey });
  return {
    id: `${PREFIX}${recipient.id}:${ephemeral.toString("base64url")}`,
    key: derive(shared, ephemeral, Buffer.from(recipient.raw)),
  };
}

/**
 * The AES key of a transit envelope with key id `id`, from the recipient's private half `seed`
 * (the data key {@link transitRecipientId} names). A `format` error when the id is malformed.
 */
export function transitKeyOf(id: string, seed: Uint8Array): Uint8Array {
  const b64 = id.slice(id.lastIndexOf(":") + 1);
  const ephemeral = Buffer.from(b64, "base64url");
  if (!/^[A-Za-z0-9_-]{43}$/.test(b64) || ephemeral.length !== 32) throw new SealedError("format", `"${id}" has no valid ephemeral key`);
  let reader = readers.get(seed);
  if (reader === undefined) {
    const privateKey = privateKeyOf(seed);
    reader = { privateKey, raw: rawPublic(createPublicKey(privateKey)) };
    readers.set(seed, reader);
  }
  let shared: Buffer;
  try {
    shared = diffieHellman({ privateKey: reader.privateKey, publicKey: publicKeyOf(ephemeral) });
  } catch (err) {
    throw new SealedError("format", `"${id}" has no valid ephemeral key: ${(err as Error).message}`);
  }
  return derive(shared, ephemeral, reader.raw);
}

/**
 * Seals `plain` to `recipient`, bound to `context` (the reader gives the same context). Not
 * compressed; from `LARGE_ENVELOPE_BYTES` (envelope.ts) on, in slices with the event loop turning between them.
 */
export async function sealTo(recipient: TransitRecipient, plain: Uint8Array, context?: string): Promise<Uint8Array> {
  return sealBySize(plain, { codec: "none", key: transitDataKey(recipient), context });
}
