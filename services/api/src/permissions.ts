/**
 * The NATS subjects the api may publish and subscribe to (docs/security.md). The generated
 * nats-server configuration (`npm run nats-config`) gives the `api` user exactly these.
 *
 * @module
 */
import {
  anyToken,
  busPermissions,
  Health,
  LeaseAcquire,
  LeaseCancel,
  LeaseRelease,
  LeaseRenew,
  MemoryAppend,
  MemoryDelete,
  MemoryGet,
  MemoryList,
  MemoryPut,
  MetricsQuery,
  MetricsSnapshotEvent,
  memoryNames,
  mergePermissions,
  objectStorePermissions,
  SchedulerDrain,
  SchedulerState,
  ServiceName,
  type ServicePermissions,
  streamPermissions,
  WorkerGenerate,
  wildcard,
} from "@atlas/contracts";

/** The api's permissions under `prefix`. */
export function permissions(prefix: string): ServicePermissions {
  const names = memoryNames(prefix);
  return {
    service: ServiceName.api,
    ...mergePermissions(
      busPermissions(prefix, ServiceName.api),
      {
        publish: [
          // Leases and the pool (scheduler), drain.
          LeaseAcquire.subject(prefix),
          LeaseRenew.subject(prefix),
          LeaseCancel.subject(prefix),
          LeaseRelease.subject(prefix),
          SchedulerDrain.subject(prefix),
          SchedulerState.subject(prefix),
          // Generation on one worker or the queue group (`any`).
          wildcard(WorkerGenerate.subject(prefix, { workerId: anyToken })),
          // Session memory calls, and appends into the durable stream (JetStream publishes).
          MemoryGet.subject(prefix),
          MemoryList.subject(prefix),
          MemoryPut.subject(prefix),
          MemoryDelete.subject(prefix),
          MemoryAppend.wildcard(prefix),
          MetricsQuery.subject(prefix),
          // Status: every instance's health, and discovery of every service.
          wildcard(Health.subject(prefix, { service: anyToken, instance: anyToken })),
          "$SRV.>",
        ],
        subscribe: [MetricsSnapshotEvent.subject(prefix)],
      },
      // The append stream (created if missing) and the transfer store for large documents.
      streamPermissions(names.stream),
      objectStorePermissions(names.transfer),
    ),
  };
}
