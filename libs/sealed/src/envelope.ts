/**
 * The envelope: one self-describing binary format for everything ATLAS keeps at rest (session
 * records, chunks, mirror files, KV-state snapshots).
 *
 * ```
 * 0  magic      4 bytes  0x89 "ASL"   (never the start of JSON text or of a llama.cpp state file)
 * 4  version    1 byte   1
 * 5  codec      1 byte   0 none, 1 gzip, 2 brotli, 3 zstd (codec.ts)
 * 6  flags      1 byte   bit 0: encrypted
 * 7  id length  1 byte   L (0 when not encrypted)
 * 8  key id     L bytes  ASCII, `<scope>:<generation>` of the data key (keyring.ts)
 *    nonce      12 bytes (encrypted only), random per envelope
 *    body       the compressed payload; encrypted: AES-256-GCM ciphertext, then its 16-byte tag
 * ```
 *
 * When encrypted, the additional authenticated data is the header (every byte before the body)
 * followed by the caller's `context` (not stored: e.g. the session a record belongs to), so a
 * flipped byte anywhere — header, body or tag — or an envelope moved to another session is
 * refused with a {@link SealedError} of code `tampered`. Data without the magic is not an
 * envelope (data written before this format): {@link isSealed} tells them apart.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { setImmediate as turn } from "node:timers/promises";
import { CODEC_IDS, type Codec, codecOf, compress, compressAsync, decompress, decompressAsync } from "./codec.ts";

/** The first bytes of every envelope. */
export const MAGIC = Uint8Array.of(0x89, 0x41, 0x53, 0x4c);
/** The envelope version this code writes and reads. */
export const ENVELOPE_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const FIXED = 8;

/**
 * Payloads from this size on are sealed and opened by {@link sealLarge} / {@link openLarge}: the
 * cipher runs in slices of this many bytes with the event loop turning between them, and the
 * codec on libuv's thread pool. In one piece, a 75 MB KV state blocked a worker's event loop (and
 * every stream it serves) for 130–190 ms (docs/adr/0018-memory-at-rest.md).
 */
export const LARGE_ENVELOPE_BYTES = 1024 * 1024;

/** Why an envelope cannot be opened. */
export type SealedErrorCode = "tampered" | "no_key" | "unknown_key" | "format" | "key_mismatch" | "unsealed";

/** An envelope that cannot be opened, or a key that cannot be used; `code` says why. */
export class SealedError extends Error {
  readonly code: SealedErrorCode;
  constructor(code: SealedErrorCode, message: string) {
    super(message);
    this.name = "SealedError";
    this.code = code;
  }
}

/** A data key and its id (written into the header). */
export interface DataKey {
  id: string;
  key: Uint8Array;
}

/** What a header says. */
export interface EnvelopeHeader {
  version: number;
  codec: Codec;
  encrypted: boolean;
  keyId: string | null;
  /** Bytes of the header (where the body starts). */
  length: number;
}

/** Whether `data` is an envelope (else: plain data written before envelopes). */
export function isSealed(data: Uint8Array): boolean {
  return data.length >= FIXED && MAGIC.every((b, i) => data[i] === b);
}

/** Reads an envelope's header; a `format` error when it is not a whole one. */
export function readHeader(data: Uint8Array): EnvelopeHeader {
  if (!isSealed(data)) throw new SealedError("format", "not an ATLAS envelope");
  const version = data[4] as number;
  if (version !== ENVELOPE_VERSION)
    throw new SealedError("format", `envelope version ${version} is not supported (this reads ${ENVELOPE_VERSION})`);
  let codec: Codec;
  try {
    codec = codecOf(data[5] as number);
  } catch (err) {
    throw new SealedError("format", (err as Error).message);
  }
  const encrypted = ((data[6] as number) & 1) === 1;
  const idLength = data[7] as number;
  const length = FIXED + idLength + (encrypted ? NONCE_BYTES : 0);
  if (data.length < length + (encrypted ? TAG_BYTES : 0)) throw new SealedError("format", "envelope is truncated");
  const keyId = idLength === 0 ? null : Buffer.from(data.subarray(FIXED, FIXED + idLength)).toString("latin1");
  if (encrypted !== (keyId !== null)) throw new SealedError("format", "envelope header is inconsistent");
  return { version, codec, encrypted, keyId, length };
}

/** Options of {@link seal}. */
export interface SealOptions {
  codec: Codec;
  /** Encrypts with this key; without it the envelope is only compressed. */
  key?: DataKey | undefined;
  /** Bound to the envelope (authenticated, not stored): the same context must be given to open it. */
  context?: string | undefined;
}

/** Wraps `plain` in an envelope: compressed with `codec`, encrypted when a key is given. */
export function seal(plain: Uint8Array, options: SealOptions): Uint8Array {
  const body = compress(options.codec, plain);
  const { header, nonce } = headerOf(options);
  const key = options.key;
  if (key === undefined) return Buffer.concat([header, body]);
  const cipher = createCipheriv("aes-256-gcm", key.key, nonce);
  cipher.setAAD(aad(header, options.context));
  return Buffer.concat([header, cipher.update(body), cipher.final(), cipher.getAuthTag()]);
}

/**
 * {@link seal} for a large payload, the same bytes out: compressed on the thread pool, encrypted
 * (or copied) in slices of {@link LARGE_ENVELOPE_BYTES} with the event loop turning between them.
 */
export async function sealLarge(plain: Uint8Array, options: SealOptions): Promise<Uint8Array> {
  const body = await compressAsync(options.codec, plain);
  const { header, nonce } = headerOf(options);
  const key = options.key;
  const out = Buffer.allocUnsafe(header.length + body.length + (key === undefined ? 0 : TAG_BYTES));
  out.set(header, 0);
  const cipher = key === undefined ? undefined : createCipheriv("aes-256-gcm", key.key, nonce);
  cipher?.setAAD(aad(header, options.context));
  const at = await inSlices(body, (slice) => cipher?.update(slice) ?? slice, out, header.length);
  if (cipher !== undefined) {
    cipher.final(); // GCM: no bytes
    out.set(cipher.getAuthTag(), at);
  }
  return out;
}

/** The header of a new envelope, and its nonce (empty when not encrypted). */
function headerOf(options: SealOptions): { header: Uint8Array; nonce: Uint8Array } {
  const key = options.key;
  const id = key === undefined ? new Uint8Array(0) : Buffer.from(key.id, "latin1");
  if (id.length > 255 || (key !== undefined && id.length === 0)) throw new SealedError("format", "a key id is 1–255 bytes");
  const nonce = key === undefined ? new Uint8Array(0) : randomBytes(NONCE_BYTES);
  const header = new Uint8Array(FIXED + id.length + nonce.length);
  header.set(MAGIC, 0);
  header.set([ENVELOPE_VERSION, CODEC_IDS[options.codec], key === undefined ? 0 : 1, id.length], 4);
  header.set(id, FIXED);
  header.set(nonce, FIXED + id.length);
  return { header, nonce };
}

/**
 * Opens an envelope. `key` gives the data key of a key id (undefined: not known); an encrypted
 * envelope whose key is unknown is an `unknown_key` error, one that fails authentication
 * (a changed byte, another context) is `tampered`.
 */
export function open(data: Uint8Array, key: (id: string) => Uint8Array | undefined, context?: string): Uint8Array {
  const h = readHeader(data);
  let body = data.subarray(h.length);
  if (h.encrypted) {
    const decipher = decipherOf(h, data, key, context);
    try {
      body = Buffer.concat([decipher.update(data.subarray(h.length, data.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw tampered(h);
    }
  }
  try {
    return decompress(h.codec, body);
  } catch (err) {
    throw new SealedError(h.encrypted ? "tampered" : "format", `cannot decompress (${h.codec}): ${(err as Error).message}`);
  }
}

/**
 * {@link open} for a large envelope: decrypted in slices of {@link LARGE_ENVELOPE_BYTES} with the
 * event loop turning between them (nothing is returned before the tag is checked), decompressed
 * on the thread pool.
 */
export async function openLarge(data: Uint8Array, key: (id: string) => Uint8Array | undefined, context?: string): Promise<Uint8Array> {
  const h = readHeader(data);
  let body = data.subarray(h.length);
  if (h.encrypted) {
    const decipher = decipherOf(h, data, key, context);
    const cipherText = data.subarray(h.length, data.length - TAG_BYTES);
    const plain = Buffer.allocUnsafe(cipherText.length);
    await inSlices(cipherText, (slice) => decipher.update(slice), plain, 0);
    try {
      decipher.final();
    } catch {
      throw tampered(h);
    }
    body = plain;
  }
  try {
    return await decompressAsync(h.codec, body);
  } catch (err) {
    throw new SealedError(h.encrypted ? "tampered" : "format", `cannot decompress (${h.codec}): ${(err as Error).message}`);
  }
}

/** {@link seal}, or {@link sealLarge} from {@link LARGE_ENVELOPE_BYTES} on: the same bytes either way. */
export async function sealBySize(plain: Uint8Array, options: SealOptions): Promise<Uint8Array> {
  return plain.length >= LARGE_ENVELOPE_BYTES ? sealLarge(plain, options) : seal(plain, options);
}

/** {@link open}, or {@link openLarge} from {@link LARGE_ENVELOPE_BYTES} on. */
export async function openBySize(data: Uint8Array, key: (id: string) => Uint8Array | undefined, context?: string): Promise<Uint8Array> {
  return data.length >= LARGE_ENVELOPE_BYTES ? openLarge(data, key, context) : open(data, key, context);
}

/** The decipher of an encrypted envelope, its nonce, additional data and tag set; `unknown_key` without its key. */
function decipherOf(h: EnvelopeHeader, data: Uint8Array, key: (id: string) => Uint8Array | undefined, context?: string) {
  const k = key(h.keyId as string);
  if (k === undefined) throw new SealedError("unknown_key", `no data key "${h.keyId}" to open this envelope`);
  const decipher = createDecipheriv("aes-256-gcm", k, data.subarray(h.length - NONCE_BYTES, h.length));
  decipher.setAAD(aad(data.subarray(0, h.length), context));
  decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
  return decipher;
}

function tampered(h: EnvelopeHeader): SealedError {
  return new SealedError("tampered", `envelope (key "${h.keyId}") failed authentication: it was changed, or belongs elsewhere`);
}

/**
 * Writes `transform` of each {@link LARGE_ENVELOPE_BYTES} slice of `input` into `out` from `at`,
 * letting the event loop run what is waiting (I/O callbacks, timers) between two slices; returns
 * where the output ended.
 */
async function inSlices(input: Uint8Array, transform: (slice: Uint8Array) => Uint8Array, out: Uint8Array, at: number): Promise<number> {
  for (let i = 0; i < input.length; i += LARGE_ENVELOPE_BYTES) {
    if (i > 0) await turn();
    const part = transform(input.subarray(i, i + LARGE_ENVELOPE_BYTES));
    out.set(part, at);
    at += part.length;
  }
  return at;
}

function aad(header: Uint8Array, context: string | undefined): Uint8Array {
  return context === undefined ? header : Buffer.concat([header, Buffer.from(context, "utf8")]);
}
