/**
 * The NATS subjects the api may publish and subscribe to (docs/security.md). The generated
 * nats-server configuration (`npm run nats-config`) gives the `api` user exactly these.
 *
 * @module
 */
import { Health } from "../health.ts";
import { rateLimitBucket } from "../limits.ts";
import { memoryNames } from "../memory.ts";
import { memoryKeysBucket } from "../memory_keys.ts";
import { MemoryAddLayer, MemoryAppend, MemoryDelete, MemoryGet, MemoryList, MemoryPut, MemoryRecall, MemoryStale } from "../memory_rpc.ts";
import { MetricsHistory, MetricsPrometheus, MetricsQuery, MetricsSnapshotEvent } from "../metrics_views.ts";
import {
  anyToken,
  busPermissions,
  kvKeysPermissions,
  kvPermissions,
  mergePermissions,
  objectStorePermissions,
  type ServicePermissions,
  wildcard,
} from "../permissions.ts";
import { LeaseAcquire, LeaseCancel, LeaseRelease, SchedulerDispatch, SchedulerDrain, SchedulerState } from "../scheduler.ts";
import { ServiceName } from "../subjects.ts";
import { WorkerGenerate } from "../worker.ts";

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
          LeaseCancel.subject(prefix),
          LeaseRelease.subject(prefix),
          SchedulerDispatch.subject(prefix),
          SchedulerDrain.subject(prefix),
          SchedulerState.subject(prefix),
          // Generation on one worker or the queue group (`any`).
          wildcard(WorkerGenerate.subject(prefix, { workerId: anyToken })),
          // Session memory calls; appends into the durable fallback stream (JetStream publishes)
          // only when persistence does not answer `memory.add`.
          MemoryRecall.subject(prefix),
          MemoryAddLayer.subject(prefix),
          MemoryGet.subject(prefix),
          MemoryList.subject(prefix),
          MemoryPut.subject(prefix),
          MemoryDelete.subject(prefix),
          MemoryAppend.wildcard(prefix),
          // A layer record JetStream refused (or an append that timed out): persistence drops the session from its caches.
          MemoryStale.subject(prefix),
          MetricsQuery.subject(prefix),
          MetricsPrometheus.subject(prefix),
          // The snapshot history the SSE stream replays (the metrics service owns it).
          MetricsHistory.subject(prefix),
          // Status: every instance's health, and discovery of every service.
          wildcard(Health.subject(prefix, { service: anyToken, instance: anyToken })),
          "$SRV.>",
        ],
        subscribe: [MetricsSnapshotEvent.subject(prefix)],
      },
      // The transfer store for large payloads (persistence creates it).
      objectStorePermissions(names.transfer),
      // The cluster-wide rate limits: batches of permits leased from one bucket (docs/adr/0017-cluster-rate-limits.md).
      kvPermissions(rateLimitBucket(prefix)),
      // Reads only (no key to write): the transit key persistence publishes, which the api seals
      // fallback appends and transfers to (libs/sealed/src/transit.ts).
      kvKeysPermissions(memoryKeysBucket(prefix), []),
    ),
  };
}
