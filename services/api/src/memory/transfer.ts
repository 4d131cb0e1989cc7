/**
 * The claim check, api side: payloads larger than `MEMORY_INLINE_BYTES` travel through the
 * transfer object store (a NATS message holds 1 MB by default). Persistence has the same few
 * lines in `services/persistence/src/transfer.ts`; see there for the object naming rules.
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

/** Parks `value` when its JSON is larger than the inline limit. */
export async function pack<T>(store: () => Promise<ObjectStore>, value: T, kind: "put" | "append"): Promise<Packed<T>> {
  const bytes = encoder.encode(JSON.stringify(value));
  if (bytes.length <= MEMORY_INLINE_BYTES) return { inline: value };
  const name = `${kind}-${crypto.randomUUID()}`;
  await (await store()).putBlob({ name }, bytes);
  return { ref: { name, bytes: bytes.length } };
}

/** Reads and deletes a parked payload, as JSON. */
export async function take(store: () => Promise<ObjectStore>, ref: PayloadRef): Promise<unknown> {
  const os = await store();
  const bytes = await os.getBlob(ref.name);
  if (bytes === null) throw new BusError("bad_reply", `Transfer object "${ref.name}" does not exist`);
  await os.delete(ref.name).catch(() => {});
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (cause) {
    throw new BusError("bad_reply", `Transfer object "${ref.name}" is not JSON`, { cause });
  }
}

/** Deletes a parked payload that was never handed over; a missing one is fine. */
export async function drop(store: () => Promise<ObjectStore>, ref: PayloadRef): Promise<void> {
  await (await store()).delete(ref.name).catch(() => {});
}
