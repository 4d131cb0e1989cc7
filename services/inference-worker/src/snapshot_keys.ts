/**
 * The data key of the KV-state snapshots, as a worker opens it (`snapshot_seal.ts`). Persistence
 * creates the key bucket (`memoryKeysBucket`) and writes its `check` entry; a worker only reads
 * them and creates the snapshot scope's key — its NATS permissions allow no more
 * (docs/security.md) — and loads that scope alone ({@link KV_STATE_KEY_SCOPE}), never a
 * tenant's key.
 *
 * @module
 */
import { type BusJetStream, isNotFound } from "@atlas/bus";
import { KV_STATE_KEY_SCOPE, memoryKeysBucket } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { loadMasterKeys, openSealer, SealedError, type Sealer, type SealerConfig, unkeyedSealer } from "@atlas/sealed";

/** The pause between two attempts to open a key store that is not ready yet, in ms. */
export const KEY_STORE_RETRY_MS = 5000;

/**
 * The sealer of the snapshot scope alone. It binds to the key bucket and reads `check`:
 *
 * - `check` is there: the snapshot key opens with the configured master key, or this fails
 *   (`key_mismatch`, `no_key`: a {@link SealedError});
 * - no `check` and no master key: nothing is encrypted, snapshots are compressed only;
 * - no `check` (or no bucket) with a master key: persistence has not started yet, or runs
 *   without the key. The worker tries to create them itself, which only a connection without the
 *   generated permissions may (development, unit tests); otherwise it waits, logging why, and
 *   tries again every `retryMs` until persistence has written them.
 */
export async function openSnapshotSealer(
  jetstream: BusJetStream,
  prefix: string,
  config: SealerConfig,
  log: Logger,
  retryMs = KEY_STORE_RETRY_MS,
): Promise<Sealer> {
  const bucket = memoryKeysBucket(prefix);
  const only = { scopes: [KV_STATE_KEY_SCOPE] };
  for (let attempt = 1; ; attempt++) {
    try {
      const keys = await jetstream.openKv(bucket);
      const check = await keys.get("check").catch((err: unknown) => {
        if (isNotFound(err)) return null; // no bucket yet
        throw err;
      });
      if (check !== null && check.operation === "PUT") return await openSealer(config, keys, only);
      if (loadMasterKeys(config) === undefined) return unkeyedSealer(config);
      return await openSealer(config, await jetstream.kv(bucket, { history: 1, description: "ATLAS wrapped data keys" }), only);
    } catch (err) {
      if (err instanceof SealedError) throw err;
      if (attempt === 1 || attempt % 12 === 0) {
        log.warn(
          { err, bucket, attempt },
          `The memory key store (KV bucket ${bucket}) has no key check yet: waiting for persistence to create it ` +
            "(it must run with the same ATLAS_MEMORY_KEY) before sealing KV-state snapshots",
        );
      }
      await new Promise((r) => setTimeout(r, retryMs));
    }
  }
}
