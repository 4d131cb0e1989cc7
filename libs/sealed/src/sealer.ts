/**
 * The policy on top of envelopes and keys, as the services use it:
 *
 * - **writes** are always envelopes: compressed (codec from `ATLAS_MEMORY_COMPRESSION`; payloads
 *   under {@link DEFAULT_MIN_COMPRESS_BYTES}, and large ones whose samples do not compress, get
 *   codec `none`: `worthCompressing`), and encrypted with the scope's data key whenever a master
 *   key is configured;
 * - **reads** open envelopes of any codec; data that is not an envelope (written before this
 *   format) is read as it is — with or without a key, so existing data migrates as it is
 *   rewritten — and counted (`stats.plain_reads`);
 * - an encrypted envelope without a configured key, a wrong key, or a changed byte is an error
 *   ({@link SealedError}), never garbage and never a silent fallback to plaintext;
 * - with `requireSealed` (`ATLAS_MEMORY_REQUIRE_SEALED`, once old data is migrated), data that is
 *   not an encrypted envelope is refused too (code `unsealed`), as a changed record is: nobody
 *   who can write the store can slip plaintext in.
 *
 * @module
 */
import { type Codec, type CompressionSetting, DEFAULT_MIN_COMPRESS_BYTES, resolveCodec, worthCompressing } from "./codec.ts";
import { isSealed, open, openBySize, readHeader, SealedError, sealBySize } from "./envelope.ts";
import { Keyring, type KeyringOptions, type KeyStore } from "./keyring.ts";
import { loadMasterKeys, type MasterKeySources } from "./master.ts";
import { isTransitKeyId, type TransitKeyEntry, transitKeyEntry, transitKeyOf, transitRecipientId } from "./transit.ts";

/** Counters for health. */
export interface SealerStats {
  sealed: number;
  opened: number;
  /** Reads of data written before envelopes (plain). */
  plain_reads: number;
  /** Envelopes refused (changed bytes, wrong or missing key). */
  refused: number;
  /** Bytes given to `seal`, and the bytes of the envelopes it made. */
  bytes_in: number;
  bytes_out: number;
}

/** Options of {@link Sealer}. */
export interface SealerOptions {
  /** Data keys; undefined: no master key configured (compression only). */
  keyring?: Keyring | undefined;
  codec: Codec;
  /** Payloads smaller than this are not compressed; default {@link DEFAULT_MIN_COMPRESS_BYTES}. */
  minCompressBytes?: number;
  /** Refuse reads of anything but encrypted envelopes (needs a keyring). */
  requireSealed?: boolean;
}

/** Seals and opens data at rest for one service. */
export class Sealer {
  readonly stats: SealerStats = { sealed: 0, opened: 0, plain_reads: 0, refused: 0, bytes_in: 0, bytes_out: 0 };
  readonly codec: Codec;
  readonly keyring: Keyring | undefined;
  readonly #min: number;
  /** Whether reads refuse data that is not an encrypted envelope. */
  readonly requireSealed: boolean;

  constructor(options: SealerOptions) {
    this.keyring = options.keyring;
    this.codec = options.codec;
    this.#min = options.minCompressBytes ?? DEFAULT_MIN_COMPRESS_BYTES;
    this.requireSealed = options.requireSealed ?? false;
    if (this.requireSealed && this.keyring === undefined) throw unkeyed();
  }

  /** Payloads smaller than this are stored with codec `none`. */
  get minCompressBytes(): number {
    return this.#min;
  }

  /** Whether writes are encrypted. */
  get encrypted(): boolean {
    return this.keyring !== undefined;
  }

  /**
   * Seals `plain` for `scope` (`tenantScope(tenant)`, or `s.<name>`), bound to `context`. From
   * `LARGE_ENVELOPE_BYTES` on, in slices with the event loop turning between them (`sealLarge`).
   */
  async seal(scope: string, plain: Uint8Array, context?: string): Promise<Uint8Array> {
    const key = this.keyring === undefined ? undefined : await this.keyring.current(scope);
    const codec = plain.length >= this.#min && worthCompressing(this.codec, plain) ? this.codec : "none";
    const out = await sealBySize(plain, { codec, key, context });
    this.stats.sealed += 1;
    this.stats.bytes_in += plain.length;
    this.stats.bytes_out += out.length;
    return out;
  }

  /** Opens what {@link seal} made (or returns plain data written before envelopes); large ones in slices (`openLarge`). */
  async open(data: Uint8Array, context?: string): Promise<Uint8Array> {
    if (!isSealed(data)) return this.#plain(data);
    try {
      const h = readHeader(data);
      if (!h.encrypted) this.#unencrypted();
      const key = h.encrypted ? await this.#keyOf(h.keyId as string) : undefined;
      return this.#opened(await openBySize(data, () => key, context));
    } catch (err) {
      this.stats.refused += 1;
      throw err;
    }
  }

  /**
   * {@link open} without I/O: undefined when the data key is not loaded yet (the caller reads
   * again later, asynchronously). Other failures throw as in {@link open}.
   */
  openCached(data: Uint8Array, context?: string): Uint8Array | undefined {
    if (!isSealed(data)) return this.#plain(data);
    try {
      const h = readHeader(data);
      if (!h.encrypted) {
        this.#unencrypted();
        return this.#opened(open(data, () => undefined, context));
      }
      const key = this.#cachedKeyOf(h.keyId as string);
      return key === undefined ? undefined : this.#opened(open(data, () => key, context));
    } catch (err) {
      this.stats.refused += 1;
      throw err;
    }
  }

  /**
   * The public half of the transit key of `scope` (`transit.ts`), for writers that seal to this
   * service without a data key; undefined without a master key. Made on first use.
   */
  async transitEntry(scope: string): Promise<TransitKeyEntry | undefined> {
    return this.keyring === undefined ? undefined : transitKeyEntry(await this.keyring.current(scope));
  }

  /** The key of an envelope's key id: a data key, or one derived from a transit id and its recipient's data key. */
  async #keyOf(keyId: string): Promise<Uint8Array | undefined> {
    const ring = this.#keyring(keyId);
    if (!isTransitKeyId(keyId)) return ring.keyOf(keyId);
    const seed = await ring.keyOf(transitRecipientId(keyId));
    return seed === undefined ? undefined : transitKeyOf(keyId, seed);
  }

  /** {@link #keyOf} without I/O: undefined when the data key is not loaded yet. */
  #cachedKeyOf(keyId: string): Uint8Array | undefined {
    const ring = this.#keyring(keyId);
    if (!isTransitKeyId(keyId)) return ring.cached(keyId);
    const seed = ring.cached(transitRecipientId(keyId));
    return seed === undefined ? undefined : transitKeyOf(keyId, seed);
  }

  #keyring(keyId: string): Keyring {
    if (this.keyring === undefined) {
      throw new SealedError(
        "no_key",
        `this data is encrypted (data key "${keyId}") but no ATLAS_MEMORY_KEY or ATLAS_MEMORY_KEY_FILE is configured`,
      );
    }
    return this.keyring;
  }

  #plain(data: Uint8Array): Uint8Array {
    this.acceptPlain();
    return data;
  }

  /**
   * A read of data written before envelopes (a caller that stores it its own way: persistence's
   * inline log records): counted, or refused with `unsealed` under `requireSealed`.
   */
  acceptPlain(): void {
    if (this.requireSealed) {
      this.stats.refused += 1;
      throw new SealedError("unsealed", "this data is not sealed, and ATLAS_MEMORY_REQUIRE_SEALED refuses unsealed data");
    }
    this.stats.plain_reads += 1;
  }

  /** An envelope without encryption: refused under `requireSealed` (a `SealedError` thrown inside `open`'s try is counted there). */
  #unencrypted(): void {
    if (this.requireSealed) {
      throw new SealedError("unsealed", "this envelope is not encrypted, and ATLAS_MEMORY_REQUIRE_SEALED refuses unsealed data");
    }
  }

  #opened(data: Uint8Array): Uint8Array {
    this.stats.opened += 1;
    return data;
  }
}

/** The configuration a sealer is made from (`@atlas/config` names). */
export interface SealerConfig extends MasterKeySources {
  ATLAS_MEMORY_COMPRESSION: CompressionSetting;
  ATLAS_MEMORY_REQUIRE_SEALED?: boolean | undefined;
}

function unkeyed(): SealedError {
  return new SealedError(
    "no_key",
    "ATLAS_MEMORY_REQUIRE_SEALED is set but neither ATLAS_MEMORY_KEY nor ATLAS_MEMORY_KEY_FILE is: nothing could be sealed or opened",
  );
}

/** A sealer without a master key (compression only); refused when the configuration requires sealed data. */
export function unkeyedSealer(config: SealerConfig): Sealer {
  if (config.ATLAS_MEMORY_REQUIRE_SEALED === true) throw unkeyed();
  return new Sealer({ codec: resolveCodec(config.ATLAS_MEMORY_COMPRESSION) });
}

/**
 * Makes a service's sealer: loads the master keys, checks them against the key store and loads
 * the data keys. Fails with a clear {@link SealedError} when the store's keys were wrapped by a
 * key that is not configured, or when the store holds keys but no key is configured. With
 * `options.scopes`, only those scopes' data keys are loaded and used (a worker: its snapshots').
 */
export async function openSealer(config: SealerConfig, store: KeyStore, options: KeyringOptions = {}): Promise<Sealer> {
  const codec = resolveCodec(config.ATLAS_MEMORY_COMPRESSION);
  const master = loadMasterKeys(config);
  if (master === undefined) {
    if (config.ATLAS_MEMORY_REQUIRE_SEALED === true) throw unkeyed();
    const check = await store.get("check");
    if (check !== null && check.operation === "PUT") {
      throw new SealedError(
        "no_key",
        "session memory is encrypted at rest (the key store has wrapped data keys) but neither ATLAS_MEMORY_KEY nor ATLAS_MEMORY_KEY_FILE is set",
      );
    }
    return unkeyedSealer(config);
  }
  return new Sealer({
    codec,
    keyring: await Keyring.open(store, master, options),
    requireSealed: config.ATLAS_MEMORY_REQUIRE_SEALED === true,
  });
}
