/**
 * The NATS subjects persistence may publish and subscribe to (docs/security.md). The generated
 * nats-server configuration (`npm run nats-config`) gives the `persistence` user exactly these.
 *
 * @module
 */
import { memoryNames } from "../memory.ts";
import { memoryKeysBucket } from "../memory_keys.ts";
import {
  MemoryAddLayer,
  MemoryAppend,
  MemoryDelete,
  MemoryDeleted,
  MemoryGet,
  MemoryList,
  MemoryLog,
  MemoryPut,
  MemoryRecall,
  MemoryStale,
} from "../memory_rpc.ts";
import {
  busPermissions,
  kvPermissions,
  mergePermissions,
  objectStorePermissions,
  type ServicePermissions,
  streamPermissions,
} from "../permissions.ts";
import { ServiceName } from "../subjects.ts";

/** Persistence's permissions under `prefix`. */
export function permissions(prefix: string): ServicePermissions {
  const names = memoryNames(prefix);
  return {
    service: ServiceName.persistence,
    ...mergePermissions(
      busPermissions(prefix, ServiceName.persistence),
      {
        // The session log (JetStream publishes), retractions, and the deleted event.
        publish: [MemoryLog.wildcard(prefix), MemoryStale.subject(prefix), MemoryDeleted.subject(prefix)],
        subscribe: [
          MemoryRecall.subject(prefix),
          MemoryAddLayer.subject(prefix),
          MemoryGet.subject(prefix),
          MemoryList.subject(prefix),
          MemoryPut.subject(prefix),
          MemoryDelete.subject(prefix),
          // Every record of the log (cache coherence across instances), retractions, and
          // fallback appends as they are published (wakes the drain).
          MemoryLog.wildcard(prefix),
          MemoryStale.subject(prefix),
          MemoryAppend.wildcard(prefix),
        ],
      },
      // The session log, chunks of large records (and format-1 documents), the fallback append
      // stream and its durable consumer, large-payload transfers.
      streamPermissions(names.log),
      kvPermissions(names.kv),
      streamPermissions(names.stream),
      objectStorePermissions(names.transfer),
      // Encryption at rest: the wrapped per-tenant data keys.
      kvPermissions(memoryKeysBucket(prefix)),
    ),
  };
}
