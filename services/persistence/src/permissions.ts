/**
 * The NATS subjects persistence may publish and subscribe to (docs/security.md). The generated
 * nats-server configuration (`npm run nats-config`) gives the `persistence` user exactly these.
 *
 * @module
 */
import {
  busPermissions,
  kvPermissions,
  MemoryDelete,
  MemoryDeleted,
  MemoryGet,
  MemoryList,
  MemoryPut,
  memoryNames,
  mergePermissions,
  objectStorePermissions,
  ServiceName,
  type ServicePermissions,
  streamPermissions,
} from "@atlas/contracts";

/** Persistence's permissions under `prefix`. */
export function permissions(prefix: string): ServicePermissions {
  const names = memoryNames(prefix);
  return {
    service: ServiceName.persistence,
    ...mergePermissions(
      busPermissions(prefix, ServiceName.persistence),
      {
        publish: [MemoryDeleted.subject(prefix)],
        subscribe: [MemoryGet.subject(prefix), MemoryList.subject(prefix), MemoryPut.subject(prefix), MemoryDelete.subject(prefix)],
      },
      // Session documents, the append stream and its durable consumer, large-payload transfers.
      kvPermissions(names.kv),
      streamPermissions(names.stream),
      objectStorePermissions(names.transfer),
    ),
  };
}
