/**
 * The NATS subjects an inference worker may publish and subscribe to (docs/security.md,
 * docs/adr/0015-worker-credentials.md).
 *
 * Each worker connects as its own user, `worker-<n>` (a pool of `ATLAS_MAX_WORKERS` users that
 * `npm run nats-config` generates), and the user's name is the worker's id: {@link workerPermissions}
 * allows only the subjects that carry that id (its heartbeat, its generate and control subjects,
 * its health subject) plus the shared ones (the `any` queue group, lease releases, L3 snapshots,
 * its claim in {@link workerClaimsBucket}). One worker can therefore neither publish another's
 * heartbeat nor take another's requests or control messages.
 *
 * Neither may a worker manage the two KV buckets it shares ({@link kvKeysPermissions}): of the
 * wrapped data keys it reads entries one by one and writes only the snapshot scope's key
 * (persistence creates the bucket and its `check`); of the claims it reads entries, may create
 * the bucket's stream when it is missing, and writes only its own key. No purge, update or
 * delete of either stream or of a message, no listing of keys.
 *
 * {@link permissions} is the older shared `inference-worker` user, allowed every worker id: it is
 * no longer in the generated compose configuration; the tests' stack (test/helpers/stack.ts) keeps
 * it for workers started under an id outside the pool.
 *
 * @module
 */
import { z } from "zod";
import { Health } from "../health.ts";
import { KV_STATE_KEY_SCOPE, memoryKeysBucket } from "../memory_keys.ts";
import { MemoryDeleted } from "../memory_rpc.ts";
import {
  anyToken,
  busPermissions,
  kvKeysPermissions,
  mergePermissions,
  objectStorePermissions,
  type ServicePermissions,
  type SubjectPermissions,
  wildcard,
} from "../permissions.ts";
import { LeaseReleased, WorkerControl, WorkerHeartbeat } from "../scheduler.ts";
import { ServiceName } from "../subjects.ts";
import { ANY_WORKER, l3Bucket, WorkerGenerate } from "../worker.ts";

/** The pool's user names and worker ids: `worker-1` … `worker-<n>`. */
export const WORKER_CREDENTIAL_PATTERN = /^worker-([1-9][0-9]*)$/;

/** The `n`-th user of the worker pool (1-based): `worker-<n>`, also that worker's id. */
export function workerCredentialName(n: number): string {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`A worker credential number is an integer ≥ 1 (got ${n})`);
  return `worker-${n}`;
}

/** Whether `user` is a user of the worker pool (`worker-<n>`). */
export function isWorkerCredential(user: string | undefined): user is string {
  return user !== undefined && WORKER_CREDENTIAL_PATTERN.test(user);
}

/**
 * The KV bucket where a worker started with the pool's credentials claims one of them
 * (`services/inference-worker/src/identity.ts`): key = the user, created only when free, kept
 * alive while the worker runs.
 */
export function workerClaimsBucket(prefix: string): string {
  return `${prefix.replaceAll(".", "_")}_worker_claims`;
}

/** A pool user's password file (one password; surrounding whitespace ignored). */
export const WorkerPasswordFile = z.string().trim().min(1, "is empty");

/** A worker's claim on its pool user, the value of its key in {@link workerClaimsBucket}. */
export const WorkerClaim = z.object({
  /** The claiming process's host (in compose, the container's id) and pid. */
  host: z.string(),
  pid: z.number().int(),
  /** When it first claimed the user (ISO 8601); the key is rewritten while it runs. */
  claimed_at: z.string(),
});
/** A worker's claim on its pool user. */
export type WorkerClaim = z.infer<typeof WorkerClaim>;

/** What every worker needs, whatever its id: the bus, the queue group, releases, L3, deletions. */
function sharedWorkerPermissions(prefix: string): SubjectPermissions {
  const bus = busPermissions(prefix, ServiceName.worker);
  const ownHealth = wildcard(Health.subject(prefix, { service: ServiceName.worker, instance: anyToken }));
  return mergePermissions(
    { publish: bus.publish, subscribe: bus.subscribe.filter((s) => s !== ownHealth) },
    {
      // The worker gives a lease back when its generation ends.
      publish: [LeaseReleased.subject(prefix)],
      subscribe: [WorkerGenerate.subject(prefix, { workerId: ANY_WORKER }), MemoryDeleted.subject(prefix)],
    },
    // L3: KV-state snapshots in the object store.
    objectStorePermissions(l3Bucket(prefix)),
    // Encryption at rest: the wrapped data keys (read; write only the snapshot scope's key).
    kvKeysPermissions(memoryKeysBucket(prefix), [KV_STATE_KEY_SCOPE]),
  );
}

/** The subjects that carry worker id `workerId` (`*` for {@link anyToken}). */
function ownSubjects(prefix: string, workerId: string): SubjectPermissions {
  return {
    publish: [wildcard(WorkerHeartbeat.subject(prefix, { workerId }))],
    subscribe: [
      wildcard(WorkerGenerate.subject(prefix, { workerId })),
      wildcard(WorkerControl.subject(prefix, { workerId })),
      wildcard(Health.subject(prefix, { service: ServiceName.worker, instance: workerId })),
    ],
  };
}

/**
 * The permissions of the pool user `workerId` (`worker-<n>`): only its own id's subjects, the
 * shared ones, and its own key of the claims bucket (which it creates when missing).
 */
export function workerPermissions(prefix: string, workerId: string): ServicePermissions {
  return {
    service: workerId,
    ...mergePermissions(
      ownSubjects(prefix, workerId),
      sharedWorkerPermissions(prefix),
      kvKeysPermissions(workerClaimsBucket(prefix), [workerId], { create: true }),
    ),
  };
}

/** The pool: `worker-1` … `worker-<count>`, each with {@link workerPermissions}. */
export function workerPoolPermissions(prefix: string, count: number): ServicePermissions[] {
  return Array.from({ length: count }, (_, i) => workerPermissions(prefix, workerCredentialName(i + 1)));
}

/** The shared `inference-worker` user: every worker id (compatibility, see the module comment). */
export function permissions(prefix: string): ServicePermissions {
  return {
    service: ServiceName.worker,
    ...mergePermissions(ownSubjects(prefix, anyToken), sharedWorkerPermissions(prefix)),
  };
}
