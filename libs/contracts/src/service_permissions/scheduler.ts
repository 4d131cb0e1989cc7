/**
 * The NATS subjects the scheduler may publish and subscribe to (docs/security.md). The
 * generated nats-server configuration (`npm run nats-config`) gives the `scheduler` user
 * exactly these.
 *
 * @module
 */
import { MemoryDeleted } from "../memory_rpc.ts";
import { anyToken, busPermissions, kvPermissions, mergePermissions, type ServicePermissions, wildcard } from "../permissions.ts";
import {
  AnyWorkerHeartbeat,
  LeaseAcquire,
  LeaseCancel,
  LeaseRelease,
  LeaseReleased,
  LeaseRenew,
  SchedulerDispatch,
  SchedulerDrain,
  SchedulerState,
  schedulerBuckets,
  WorkerControl,
} from "../scheduler.ts";
import { ServiceName } from "../subjects.ts";
import { WorkerGenerate } from "../worker.ts";

/** The scheduler's permissions under `prefix`. */
export function permissions(prefix: string): ServicePermissions {
  const buckets = schedulerBuckets(prefix);
  return {
    service: ServiceName.scheduler,
    ...mergePermissions(
      busPermissions(prefix, ServiceName.scheduler),
      {
        publish: [
          wildcard(WorkerControl.subject(prefix, { workerId: anyToken })),
          // One-hop dispatch: the request is relayed to the leased worker (the caller's inbox kept).
          wildcard(WorkerGenerate.subject(prefix, { workerId: anyToken })),
        ],
        subscribe: [
          AnyWorkerHeartbeat.subject(prefix),
          MemoryDeleted.subject(prefix),
          LeaseAcquire.subject(prefix),
          LeaseRenew.subject(prefix),
          LeaseCancel.subject(prefix),
          LeaseRelease.subject(prefix),
          LeaseReleased.subject(prefix),
          SchedulerDispatch.subject(prefix),
          SchedulerDrain.subject(prefix),
          SchedulerState.subject(prefix),
        ],
      },
      // The leader claim and the durable pool state (leases, fencing block).
      kvPermissions(buckets.leader),
      kvPermissions(buckets.state),
    ),
  };
}
