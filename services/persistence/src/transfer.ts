/**
 * The claim check for payloads larger than `MEMORY_INLINE_BYTES` (a NATS message holds 1 MB by
 * default): the sender parks the JSON in the transfer object store and sends a `PayloadRef`;
 * the receiver takes it (reads, then deletes). The api has the same few lines in
 * `services/api/src/memory/transfer.ts`.
 *
 * Object names start with what they carry: `get-` (a reply to the api), `put-` (a document from
 * the api), `append-` (a layer waiting in the append stream). Only `get-` and `put-` objects are
 * ever collected by age; an `append-` object lives until its append is applied.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import { MEMORY_INLINE_BYTES, type PayloadRef } from "@atlas/contracts";
import type { ObjectStore } from "@nats-io/obj";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Inline JSON value, or a reference to it in the transfer store when it is large. */
export type Packed<T> = { inline: T; ref?: undefined } | { inline?: undefined; ref: PayloadRef };

/** The transfer object store, seen from persistence. */
export class Transfer {
  readonly store: ObjectStore;

  constructor(store: ObjectStore) {
    this.store = store;
  }

  /** `value` inline when its JSON is small, else parked under a new name starting with `kind`. */
  async pack<T>(value: T, kind: "get" | "put" | "append"): Promise<Packed<T>> {
    const bytes = encoder.encode(JSON.stringify(value));
    if (bytes.length <= MEMORY_INLINE_BYTES) return { inline: value };
    const name = `${kind}-${crypto.randomUUID()}`;
    await this.store.putBlob({ name }, bytes);
    return { ref: { name, bytes: bytes.length } };
  }

  /** Reads a parked payload as JSON (without deleting it). */
  async read(ref: PayloadRef): Promise<unknown> {
    const bytes = await this.store.getBlob(ref.name);
    if (bytes === null) throw new BusError("bad_request", `Transfer object "${ref.name}" does not exist`, { param: "ref" });
    if (bytes.length !== ref.bytes) {
      throw new BusError("bad_request", `Transfer object "${ref.name}" holds ${bytes.length} bytes, not ${ref.bytes}`, { param: "ref" });
    }
    try {
      return JSON.parse(decoder.decode(bytes));
    } catch (cause) {
      throw new BusError("bad_request", `Transfer object "${ref.name}" is not JSON`, { param: "ref", cause });
    }
  }

  /** Deletes a parked payload; a missing one is fine. */
  async drop(ref: PayloadRef): Promise<void> {
    await this.store.delete(ref.name).catch(() => {});
  }

  /** Deletes `get-` and `put-` objects older than `maxAgeMs` (left by a caller that died); returns how many. */
  async collect(maxAgeMs: number, now = Date.now()): Promise<number> {
    let removed = 0;
    for (const info of await this.store.list()) {
      if (!/^(get|put)-/.test(info.name)) continue;
      if (now - Date.parse(info.mtime) < maxAgeMs) continue;
      await this.store.delete(info.name).catch(() => {});
      removed += 1;
    }
    return removed;
  }
}
