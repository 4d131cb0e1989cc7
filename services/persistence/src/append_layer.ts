/**
 * The layer an append carries — inline, by reference in the transfer store, or sealed to the
 * transit key (how the api parks it in the fallback stream when memory is encrypted at rest) —
 * read one way for `memory.add` (`handlers.ts`) and the fallback drain (`appends.ts`).
 *
 * @module
 */
import { BusError, type ClaimCheck } from "@atlas/bus";
import { appendSealContext, type MemoryAppendMessage, MemoryLayer } from "@atlas/contracts";
import { SealedError, type Sealer } from "@atlas/sealed";

/** What reading an append's layer needs. */
export interface AppendLayerDeps {
  transfer: ClaimCheck;
  sealer: Sealer;
}

/**
 * The append's layer, validated. A layer that can never be read (invalid, changed, sealed to a
 * key this service does not hold) is a `bad_request`; the store not answering is retryable.
 */
export async function appendLayer(append: MemoryAppendMessage, d: AppendLayerDeps): Promise<MemoryLayer> {
  let raw: unknown = append.layer;
  if (append.ref !== undefined) raw = await d.transfer.read(append.ref);
  else if (append.sealed !== undefined) {
    let json: Uint8Array;
    try {
      json = await d.sealer.open(Buffer.from(append.sealed, "base64"), appendSealContext(append.tenant, append.session_id));
    } catch (err) {
      if (!(err instanceof SealedError)) throw err;
      throw new BusError("bad_request", `The sealed layer cannot be opened: ${err.message}`, { param: "sealed", cause: err });
    }
    try {
      raw = JSON.parse(Buffer.from(json).toString("utf8"));
    } catch (cause) {
      throw new BusError("bad_request", "The sealed layer is not JSON", { param: "sealed", cause });
    }
  }
  const parsed = MemoryLayer.safeParse(raw);
  if (!parsed.success) throw BusError.fromZod(parsed.error, "layer");
  return parsed.data;
}
