/**
 * Publishes the transit key's public half (`@atlas/sealed`'s `transit.ts`) in the key bucket,
 * entry `TRANSIT_KEY_ENTRY`, where the api reads it to seal what it parks for persistence
 * (fallback appends, claim-check transfers). Written at start when it is missing or differs;
 * without a master key nothing is published and the api parks plain JSON, as memory is then
 * only compressed at rest.
 *
 * @module
 */
import type { KV } from "@atlas/bus";
import { TRANSIT_KEY_ENTRY, TRANSIT_KEY_SCOPE } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { type Sealer, TransitKeyEntry } from "@atlas/sealed";

/** Publishes the entry when it is missing or differs; returns it (undefined without a master key). */
export async function publishTransitKey(keys: KV, sealer: Sealer, log: Logger): Promise<TransitKeyEntry | undefined> {
  const entry = await sealer.transitEntry(TRANSIT_KEY_SCOPE);
  if (entry === undefined) return undefined;
  const current = await keys.get(TRANSIT_KEY_ENTRY);
  let published: TransitKeyEntry | undefined;
  try {
    published = current?.operation === "PUT" ? TransitKeyEntry.parse(current.json()) : undefined;
  } catch {
    published = undefined;
  }
  if (published?.id === entry.id && published.public === entry.public) return published;
  await keys.put(TRANSIT_KEY_ENTRY, JSON.stringify(entry));
  log.info({ key: entry.id }, "Published the transit key: the api seals fallback appends and transfers to it");
  return entry;
}
