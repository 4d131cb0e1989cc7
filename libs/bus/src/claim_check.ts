/**
 * The claim check for payloads larger than `MEMORY_INLINE_BYTES` (a NATS message holds 1 MB by
 * default): the sender parks the JSON in an object store and sends a `PayloadRef` instead; the
 * receiver reads it (and drops it once used). One implementation for both sides of session
 * memory: the api (`services/api/src/memory/client.ts`) and persistence
 * (`services/persistence/src/handlers.ts`, `appends.ts`).
 *
 * Object names start with what they carry — `get-` (a reply to the api), `put-` (a document or
 * layer from the api), `append-` (a layer waiting in the append stream) — so a collector can
 * remove what a dead caller left without touching what still waits to be applied.
 *
 * @module
 */
import { MEMORY_INLINE_BYTES, type PayloadRef } from "@atlas/contracts";
import type { ObjectStore } from "@nats-io/obj";
import { BusError } from "./errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Inline JSON value, or a reference to it in the object store when it is large. */
export type Packed<T> = { inline: T; ref?: undefined } | { inline?: undefined; ref: PayloadRef };

/** What a payload is, as the first part of its object's name. */
export type ClaimKind = "get" | "put" | "append";

/** Options for {@link ClaimCheck}. */
export interface ClaimCheckOptions {
  /** The object store, opened when first needed (the same promise is reused). */
  store: () => Promise<ObjectStore>;
  /**
   * How a bad reference is reported: `bad_request` where the payload came in a request (the
   * receiver of a request), `bad_reply` where it came in a reply.
   */
  refusal: "bad_request" | "bad_reply";
  /**
   * Turns a payload's JSON bytes into what is stored under `name` (the api: sealed to
   * persistence's transit key, `@atlas/sealed`); default: stored as they are.
   */
  seal?: (bytes: Uint8Array, name: string) => Promise<Uint8Array>;
  /**
   * Turns what is stored under `name` back into JSON bytes (persistence: opens sealed
   * payloads, reads plain ones); default: read as they are. A throw refuses the payload.
   */
  open?: (stored: Uint8Array, name: string) => Promise<Uint8Array>;
}

/** Parks large payloads in an object store and takes them back. */
export class ClaimCheck {
  readonly #store: () => Promise<ObjectStore>;
  readonly #refusal: "bad_request" | "bad_reply";
  readonly #seal: ClaimCheckOptions["seal"];
  readonly #open: ClaimCheckOptions["open"];

  constructor(options: ClaimCheckOptions) {
    this.#store = options.store;
    this.#refusal = options.refusal;
    this.#seal = options.seal;
    this.#open = options.open;
  }

  /**
   * `value` inline when its JSON is small, else parked under a new name starting with `kind`,
   * stored as `seal` (this call's, else the options') makes it.
   */
  async pack<T>(value: T, kind: ClaimKind, seal = this.#seal): Promise<Packed<T>> {
    const bytes = encoder.encode(JSON.stringify(value));
    if (bytes.length <= MEMORY_INLINE_BYTES) return { inline: value };
    const name = `${kind}-${crypto.randomUUID()}`;
    const stored = seal === undefined ? bytes : await seal(bytes, name);
    await (await this.#store()).putBlob({ name }, stored);
    return { ref: { name, bytes: stored.length } };
  }

  /** Reads a parked payload as JSON (without dropping it); it must be whole and JSON. */
  async read(ref: PayloadRef): Promise<unknown> {
    const bytes = await (await this.#store()).getBlob(ref.name);
    const refuse = (message: string, cause?: unknown) =>
      new BusError(this.#refusal, message, { ...(this.#refusal === "bad_request" ? { param: "ref" } : {}), cause });
    if (bytes === null) throw refuse(`Transfer object "${ref.name}" does not exist`);
    if (bytes.length !== ref.bytes) throw refuse(`Transfer object "${ref.name}" holds ${bytes.length} bytes, not ${ref.bytes}`);
    let json: Uint8Array = bytes;
    try {
      if (this.#open !== undefined) json = await this.#open(bytes, ref.name);
    } catch (cause) {
      throw refuse(`Transfer object "${ref.name}" cannot be opened: ${(cause as Error).message}`, cause);
    }
    try {
      return JSON.parse(decoder.decode(json));
    } catch (cause) {
      throw refuse(`Transfer object "${ref.name}" is not JSON`, cause);
    }
  }

  /** Reads a parked payload and drops it (a reply, used once). */
  async take(ref: PayloadRef): Promise<unknown> {
    const value = await this.read(ref);
    await this.drop(ref);
    return value;
  }

  /** Deletes a parked payload; a missing one is fine. */
  async drop(ref: PayloadRef): Promise<void> {
    await (await this.#store()).delete(ref.name).catch(() => {});
  }

  /** Deletes `get-` and `put-` objects older than `maxAgeMs` (left by a caller that died); returns how many. */
  async collect(maxAgeMs: number, now = Date.now()): Promise<number> {
    const store = await this.#store();
    let removed = 0;
    for (const info of await store.list()) {
      if (!/^(get|put)-/.test(info.name)) continue;
      if (now - Date.parse(info.mtime) < maxAgeMs) continue;
      await store.delete(info.name).catch(() => {});
      removed += 1;
    }
    return removed;
  }
}
