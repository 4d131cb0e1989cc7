/**
 * Data keys, wrapped by the master key, kept in a KV bucket (JetStream's, in ATLAS: its name is
 * `memoryKeysBucket` in libs/contracts). One data key per scope: `t.<tenant>` for a tenant's
 * session memory, `s.<name>` for a system use (the workers' KV-state snapshots). Each entry:
 *
 * ```json
 * {"v":1,"scope":"t.acme","gen":1,"master":"<kcv>","wrapped":"<base64 nonce|ciphertext|tag>","created_at":"…"}
 * ```
 *
 * wrapped with AES-256-GCM under the master key whose key check value is `master`, the scope
 * and generation as additional data (a wrapped key moved to another scope does not open). The
 * entry `check` holds the KCV of the master key everything is wrapped with: {@link Keyring.open}
 * compares it with the configured keys and refuses to start with a wrong or missing key.
 * A keyring opened with {@link KeyringOptions.scopes} holds those scopes' keys only (a worker:
 * the snapshot scope, never a tenant's).
 * {@link rotateMasterKey} re-wraps every entry with the current master key (the data, sealed
 * with the data keys, is not rewritten).
 *
 * @module
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { z } from "zod";
import { type DataKey, SealedError } from "./envelope.ts";
import type { MasterKey, MasterKeys } from "./master.ts";

/** The part of a JetStream KV bucket the keyring uses (nats.js `KV` fits). */
export interface KeyStore {
  get(key: string): Promise<{ value: Uint8Array; revision: number; operation: string } | null>;
  create(key: string, value: Uint8Array): Promise<number>;
  update(key: string, value: Uint8Array, revision: number): Promise<number>;
  keys(filter?: string): Promise<AsyncIterable<string>>;
}

/** A wrapped data key, as stored. */
export const WrappedKey = z
  .object({
    v: z.literal(1),
    scope: z.string().regex(/^[ts]\.[A-Za-z0-9_-]{1,64}$/),
    gen: z.number().int().positive(),
    master: z.string().regex(/^[0-9a-f]{16}$/),
    wrapped: z.string().min(1),
    created_at: z.string(),
  })
  .strict();
/** A wrapped data key, as stored. */
export type WrappedKey = z.infer<typeof WrappedKey>;

/** The `check` entry: which master key wraps the data keys. */
export const KeyCheck = z.object({ v: z.literal(1), master: z.string().regex(/^[0-9a-f]{16}$/), at: z.string() }).strict();
/** The `check` entry. */
export type KeyCheck = z.infer<typeof KeyCheck>;

const CHECK = "check";
const enc = new TextEncoder();
const dec = new TextDecoder();

/** The scope of a tenant's session memory. */
export const tenantScope = (tenant: string): string => `t.${tenant}`;

/** Options of {@link Keyring.open}. */
export interface KeyringOptions {
  /**
   * Only these scopes: their keys are loaded at open, and a key of another scope is refused
   * (`unknown_key`) instead of read from the store. Default: every scope, loaded at open.
   */
  scopes?: readonly string[];
}

/** Data keys of every scope (or of {@link KeyringOptions.scopes}), unwrapped on first use and kept in memory. */
export class Keyring {
  readonly #store: KeyStore;
  readonly #master: MasterKeys;
  readonly #scopes: ReadonlySet<string> | undefined;
  /** Unwrapped keys by key id (`<scope>:<gen>`). */
  readonly #keys = new Map<string, Uint8Array>();
  readonly #current = new Map<string, DataKey>();

  private constructor(store: KeyStore, master: MasterKeys, scopes: readonly string[] | undefined) {
    this.#store = store;
    this.#master = master;
    this.#scopes = scopes === undefined ? undefined : new Set(scopes);
  }

  /**
   * Checks the configured master keys against the store and loads every data key (or those of
   * `options.scopes`, which reads them one by one instead of listing the store). Throws a
   * {@link SealedError} `key_mismatch` when the data keys were wrapped by a key that is not
   * configured (a wrong `ATLAS_MEMORY_KEY`, or a rotation without the old key in
   * `ATLAS_MEMORY_KEY_PREVIOUS`). The first start with a key writes the `check` entry.
   */
  static async open(store: KeyStore, master: MasterKeys, options: KeyringOptions = {}): Promise<Keyring> {
    const ring = new Keyring(store, master, options.scopes);
    const check = await ring.check();
    if (check === null) {
      await store
        .create(CHECK, enc.encode(JSON.stringify({ v: 1, master: master.current.kcv, at: new Date().toISOString() })))
        .catch(async (err) => {
          if ((await ring.check()) === null) throw err; // else: another instance wrote it first
        });
    }
    const stored = (await ring.check()) as KeyCheck;
    if (ring.#masterFor(stored.master) === undefined) {
      throw new SealedError(
        "key_mismatch",
        `the memory data keys are wrapped by master key ${stored.master}, but the configured key is ${master.current.kcv}` +
          `${master.previous.length > 0 ? ` (previous: ${master.previous.map((k) => k.kcv).join(", ")})` : ""}: ` +
          "set ATLAS_MEMORY_KEY (or ATLAS_MEMORY_KEY_FILE) to the right key, or put the old one in ATLAS_MEMORY_KEY_PREVIOUS and rotate",
      );
    }
    if (options.scopes !== undefined) for (const scope of options.scopes) await ring.#load(scope);
    else for await (const k of await store.keys("*.*")) await ring.#load(k);
    return ring;
  }

  /** The `check` entry, or null when the store has none (no key was ever configured). */
  async check(): Promise<KeyCheck | null> {
    const e = await this.#store.get(CHECK);
    return e === null || e.operation !== "PUT" ? null : KeyCheck.parse(JSON.parse(dec.decode(e.value)));
  }

  /** Whether the stored keys are wrapped by an older master key (a rotation is due). */
  async rotationDue(): Promise<boolean> {
    return (await this.check())?.master !== this.#master.current.kcv;
  }

  /** The data key of a key id if it is loaded (no I/O: for code that cannot wait). */
  cached(id: string): Uint8Array | undefined {
    return this.#keys.get(id);
  }

  /** The data key of a key id, read from the store when not loaded; undefined when the store has none. */
  async keyOf(id: string): Promise<Uint8Array | undefined> {
    const hit = this.#keys.get(id);
    if (hit !== undefined) return hit;
    const scope = id.split(":")[0] ?? "";
    this.#inScope(scope);
    await this.#load(scope);
    return this.#keys.get(id);
  }

  /** The key to seal new data of a scope with; created (and stored, wrapped) on first use. */
  async current(scope: string): Promise<DataKey> {
    const hit = this.#current.get(scope);
    if (hit !== undefined) return hit;
    this.#inScope(scope);
    if ((await this.#load(scope)) === undefined) {
      const key = randomBytes(32);
      const entry = wrap(this.#master.current, scope, 1, key);
      try {
        await this.#store.create(scope, enc.encode(JSON.stringify(entry)));
      } catch {
        // Created meanwhile by another instance: use theirs.
      }
      await this.#load(scope);
    }
    const made = this.#current.get(scope);
    if (made === undefined) throw new SealedError("unknown_key", `cannot create the data key of ${scope}`);
    return made;
  }

  /** Every wrapped data key as stored (safe to keep beside backups: only the master key opens them). */
  async exportWrapped(): Promise<WrappedKey[]> {
    const out: WrappedKey[] = [];
    for await (const k of await this.#store.keys("*.*")) {
      const e = await this.#store.get(k);
      if (e !== null && e.operation === "PUT") out.push(WrappedKey.parse(JSON.parse(dec.decode(e.value))));
    }
    return out.sort((x, y) => x.scope.localeCompare(y.scope));
  }

  /**
   * Puts back wrapped data keys the store lacks (a store restored from nothing but backups) and
   * loads them; a key the store has is kept (the backup may be older than a rotation). A missing
   * key wrapped by a master key that is not configured cannot be used: listed in `unusable`
   * (the data it sealed will not open), not put back.
   */
  async importWrapped(entries: unknown[]): Promise<{ restored: number; unusable: string[] }> {
    const out = { restored: 0, unusable: [] as string[] };
    for (const raw of entries) {
      const w = WrappedKey.parse(raw);
      if ((await this.#store.get(w.scope)) !== null) continue;
      if (this.#masterFor(w.master) === undefined) {
        out.unusable.push(`${w.scope} (wrapped by master key ${w.master}, not configured)`);
        continue;
      }
      await this.#store.create(w.scope, enc.encode(JSON.stringify(w))).catch(() => {});
      await this.#load(w.scope);
      out.restored += 1;
    }
    return out;
  }

  /** The key check value of the current master key. */
  get masterKcv(): string {
    return this.#master.current.kcv;
  }

  async #load(scope: string): Promise<DataKey | undefined> {
    if (scope === CHECK) return undefined;
    const e = await this.#store.get(scope);
    if (e === null || e.operation !== "PUT") return undefined;
    const w = WrappedKey.parse(JSON.parse(dec.decode(e.value)));
    const master = this.#masterFor(w.master);
    if (master === undefined)
      throw new SealedError("key_mismatch", `the data key of ${scope} is wrapped by master key ${w.master}, which is not configured`);
    const key = { id: `${w.scope}:${w.gen}`, key: unwrap(master, w) };
    this.#keys.set(key.id, key.key);
    this.#current.set(w.scope, key);
    return key;
  }

  /** Throws when `scope` is not one of this keyring's {@link KeyringOptions.scopes}. */
  #inScope(scope: string): void {
    if (this.#scopes !== undefined && !this.#scopes.has(scope)) {
      throw new SealedError("unknown_key", `the data key of ${scope} is not one this service holds (${[...this.#scopes].join(", ")})`);
    }
  }

  #masterFor(kcv: string): MasterKey | undefined {
    return [this.#master.current, ...this.#master.previous].find((k) => k.kcv === kcv);
  }
}

/**
 * Re-wraps every data key with the current master key (unwrapping each with whichever
 * configured key wrapped it), then records the current key in `check`. The sealed data is not
 * touched. Returns how many keys it re-wrapped.
 */
export async function rotateMasterKey(store: KeyStore, master: MasterKeys): Promise<{ rewrapped: number; unchanged: number }> {
  const all = [master.current, ...master.previous];
  let rewrapped = 0;
  let unchanged = 0;
  for await (const k of await store.keys("*.*")) {
    const e = await store.get(k);
    if (e === null || e.operation !== "PUT") continue;
    const w = WrappedKey.parse(JSON.parse(dec.decode(e.value)));
    if (w.master === master.current.kcv) {
      unchanged += 1;
      continue;
    }
    const old = all.find((m) => m.kcv === w.master);
    if (old === undefined)
      throw new SealedError("key_mismatch", `the data key of ${k} is wrapped by master key ${w.master}, which is not configured`);
    const next = { ...wrap(master.current, w.scope, w.gen, unwrap(old, w)), created_at: w.created_at };
    await store.update(k, enc.encode(JSON.stringify(next)), e.revision);
    rewrapped += 1;
  }
  const check = await store.get(CHECK);
  const value = enc.encode(JSON.stringify({ v: 1, master: master.current.kcv, at: new Date().toISOString() }));
  if (check === null) await store.create(CHECK, value);
  else await store.update(CHECK, value, check.revision);
  return { rewrapped, unchanged };
}

function wrap(master: MasterKey, scope: string, gen: number, key: Uint8Array): WrappedKey {
  const nonce = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", master.key, nonce);
  cipher.setAAD(enc.encode(`atlas-data-key|${scope}|${gen}`));
  const wrapped = Buffer.concat([nonce, cipher.update(key), cipher.final(), cipher.getAuthTag()]).toString("base64");
  return { v: 1, scope, gen, master: master.kcv, wrapped, created_at: new Date().toISOString() };
}

function unwrap(master: MasterKey, w: WrappedKey): Uint8Array {
  const raw = Buffer.from(w.wrapped, "base64");
  const decipher = createDecipheriv("aes-256-gcm", master.key, raw.subarray(0, 12));
  decipher.setAAD(enc.encode(`atlas-data-key|${w.scope}|${w.gen}`));
  decipher.setAuthTag(raw.subarray(raw.length - 16));
  try {
    return Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]);
  } catch {
    throw new SealedError("tampered", `the wrapped data key of ${w.scope} failed authentication (changed in the store?)`);
  }
}
