/**
 * The api's side of transit sealing (`@atlas/sealed`'s `transit.ts`): what the api parks in
 * JetStream for persistence — fallback appends (`fallback.ts`) and claim-check transfers
 * (`client.ts`) — is sealed to the transit key persistence publishes in the key bucket, when it
 * publishes one (a master key is configured). The api holds no data key: it cannot read back
 * what it sealed.
 *
 * The published entry is read when first needed and again a minute later at the earliest; a
 * bucket without the entry (or no bucket: no persistence has run with a master key) means plain
 * JSON, as memory is then only compressed at rest. A read that fails is an error, never a silent
 * fallback to plaintext: the caller retries as it retries the publish itself.
 *
 * @module
 */
import { type Bus, isNotFound, type KV } from "@atlas/bus";
import { memoryKeysBucket, TRANSIT_KEY_ENTRY } from "@atlas/contracts";
import type { TransitRecipient } from "@atlas/sealed";

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
    const known = this.#known;
    if (known !== undefined && Date.now() - known.at < REFRESH_MS) return known.recipient;
    this.#reading ??= this.#read().finally(() => {
      this.#reading = undefined;
    });
    await this.#reading;
    return this.#known?.recipient;
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
    const { TransitKeyEntry, transitRecipient } = await sealed();
    const entry = e === null || e.operation !== "PUT" ? undefined : TransitKeyEntry.parse(e.json());
    this.#known = { recipient: entry === undefined ? undefined : transitRecipient(entry), at: Date.now() };
  }
}
