/**
 * The api's side of transit sealing (`@atlas/sealed`'s `transit.ts`): what the api parks in
 * JetStream for persistence — fallback appends (`fallback.ts`) and claim-check transfers
 * (`client.ts`) — is sealed to the transit key persistence publishes in the key bucket, when it
 * publishes one (a master key is configured). The api holds no data key: it cannot read back
 * what it sealed.
 *
 * Replies persistence parks for the api (large recalls and documents) come back sealed to this
 * process's own key pair, made at start and never stored, when the api sends its public half as
 * `reply_key` — which it does once persistence has published a transit key.
 *
 * The published entry is read when first needed and again a minute later at the earliest; a
 * bucket without the entry (or no bucket: no persistence has run with a master key) means plain
 * JSON, as memory is then only compressed at rest. A read that fails is an error, never a silent
 * fallback to plaintext: the caller retries as it retries the publish itself.
 *
 * @module
 */
import { type Bus, isNotFound, type KV } from "@atlas/bus";
import { memoryKeysBucket, REPLY_KEY_ID, TRANSIT_KEY_ENTRY } from "@atlas/contracts";
import type { DataKey, TransitRecipient } from "@atlas/sealed";

/** Loaded when first needed: most apis never park anything (and idle memory is a target). */
const sealed = () => import("@atlas/sealed");

/** How long a read of the published entry is used before the next use reads it again. */
const REFRESH_MS = 60_000;

/** Seals what the api parks for persistence, when persistence published a transit key. */
export class TransitSealer {
  readonly #bus: Bus;
  #kv: Promise<KV> | undefined;
  #known: { recipient: TransitRecipient | undefined; at: number } | undefined;
  #reading: Promise<void> | undefined;
  #reply: { key: DataKey; public: string } | undefined;

  constructor(bus: Bus) {
    this.#bus = bus;
  }

  /** `plain` sealed to the transit key, bound to `context`; undefined when none is published. */
  async seal(plain: Uint8Array, context: string): Promise<Uint8Array | undefined> {
    const recipient = await this.recipient();
    return recipient === undefined ? undefined : (await sealed()).sealTo(recipient, plain, context);
  }

  /** The published transit key, or undefined when there is none. Rejects when it cannot be read. */
  async recipient(): Promise<TransitRecipient | undefined> {
    if (!this.#stale()) return this.#known?.recipient;
    await this.#refresh();
    return this.#known?.recipient;
  }

  /**
   * The public half of this api's reply key, for `reply_key` in recalls and reads, once
   * persistence has published a transit key (memory is encrypted, and persistence seals replies);
   * else undefined. Never waits: an entry not read yet, or read over a minute ago, is read in the
   * background.
   */
  replyKey(): string | undefined {
    if (this.#stale()) this.#refresh().catch(() => {});
    return this.#known?.recipient === undefined ? undefined : this.#reply?.public;
  }

  /** A parked reply as JSON bytes: opened with this api's reply key when sealed, else as it is. */
  async openReply(stored: Uint8Array, name: string): Promise<Uint8Array> {
    const s = await sealed();
    if (!s.isSealed(stored)) return stored;
    if (this.#reply === undefined) throw new s.SealedError("unknown_key", "a sealed reply, but this api has no reply key");
    return s.openTransit(stored, this.#reply.key, name);
  }

  #stale(): boolean {
    return this.#known === undefined || Date.now() - this.#known.at >= REFRESH_MS;
  }

  #refresh(): Promise<void> {
    this.#reading ??= this.#read().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #read(): Promise<void> {
    let kv: KV;
    try {
      this.#kv ??= this.#bus.jetstream.openKv(memoryKeysBucket(this.#bus.prefix));
      kv = await this.#kv;
    } catch (err) {
      this.#kv = undefined;
      // No key bucket: no persistence has run with a master key, so nothing is encrypted.
      if (isNotFound(err)) {
        this.#known = { recipient: undefined, at: Date.now() };
        return;
      }
      throw err;
    }
    const e = await kv.get(TRANSIT_KEY_ENTRY);
    const { TransitKeyEntry, transitRecipient, transitKeyPair } = await sealed();
    // Made once, held in memory only: what persistence parks for this process is sealed to it.
    this.#reply ??= transitKeyPair(REPLY_KEY_ID);
    const entry = e === null || e.operation !== "PUT" ? undefined : TransitKeyEntry.parse(e.json());
    this.#known = { recipient: entry === undefined ? undefined : transitRecipient(entry), at: Date.now() };
  }
}

/** `reply_key` for a recall or read request: this api's, once persistence seals replies. */
export function replyKey(transit: TransitSealer): { reply_key?: string } {
  const key = transit.replyKey();
  return key === undefined ? {} : { reply_key: key };
}
