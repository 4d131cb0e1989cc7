/**
 * Encryption at rest (docs/adr/0018-memory-at-rest.md): where the wrapped data keys live, and
 * the key scope of the workers' KV-state snapshots (`@atlas/sealed` names a tenant's scope
 * `t.<tenant>`).
 *
 * @module
 */

/**
 * The JetStream KV bucket of the wrapped data keys (one entry per scope, and `check`: which
 * master key wraps them). Persistence and the workers read and create entries; the key
 * rotation command (`npm run memory-key -- rotate`) re-wraps them.
 */
export function memoryKeysBucket(prefix: string): string {
  return `${prefix.replaceAll(".", "_")}_memory_keys`;
}

/** The data key scope of the KV-state snapshots (L2 files, L3 objects), shared by every worker. */
export const KV_STATE_KEY_SCOPE = "s.kvstate";

/**
 * The data key scope of the transit key: its data key is the private half of an X25519 key pair
 * (`@atlas/sealed`'s `transit.ts`) that the api seals what it parks for persistence to (fallback
 * appends, claim-check transfers), so the api holds no data key.
 */
export const TRANSIT_KEY_SCOPE = "s.transit";

/** The entry of the key bucket where persistence publishes the transit key's public half (the api reads it). */
export const TRANSIT_KEY_ENTRY = "transit";

/**
 * What a sealed fallback append is bound to (the envelope's context): the session it belongs to,
 * so a sealed layer moved to another session's subject does not open.
 */
export function appendSealContext(tenant: string, sessionId: string): string {
  return `memory.append|${tenant}|${sessionId}`;
}

/**
 * The key id persistence seals a reply parked for the api to (`reply_key` of `memory.recall` and
 * `memory.get`): the api's own key pair, made at start and held in memory only.
 */
export const REPLY_KEY_ID = "caller:1";
