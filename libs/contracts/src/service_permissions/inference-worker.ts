/**
 * The NATS subjects an inference worker may publish and subscribe to (docs/security.md). The
 * generated nats-server configuration (`npm run nats-config`) gives the `inference-worker` user
 * exactly these. Worker ids are chosen at run time, so the subjects that carry one are allowed
 * for any id: one user serves every worker (a worker could answer another worker's subject —
 * see docs/security.md for what that means).
 *
 * @module
 */
import { MemoryDeleted } from "../memory_rpc.ts";
import { anyToken, busPermissions, mergePermissions, objectStorePermissions, type ServicePermissions, wildcard } from "../permissions.ts";
import { LeaseReleased, WorkerControl, WorkerHeartbeat } from "../scheduler.ts";
import { ServiceName } from "../subjects.ts";
import { l3Bucket, WorkerGenerate } from "../worker.ts";

/** A worker's permissions under `prefix`. */
export function permissions(prefix: string): ServicePermissions {
  return {
    service: ServiceName.worker,
    ...mergePermissions(
      busPermissions(prefix, ServiceName.worker),
      {
        publish: [
          wildcard(WorkerHeartbeat.subject(prefix, { workerId: anyToken })),
          // The worker gives a lease back when its generation ends.
          LeaseReleased.subject(prefix),
        ],
        subscribe: [
          // Its own subject and the queue group (`worker.any.generate`).
          wildcard(WorkerGenerate.subject(prefix, { workerId: anyToken })),
          wildcard(WorkerControl.subject(prefix, { workerId: anyToken })),
          MemoryDeleted.subject(prefix),
        ],
      },
      // L3: KV-state snapshots in the object store.
      objectStorePermissions(l3Bucket(prefix)),
    ),
  };
}
