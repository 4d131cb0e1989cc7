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
