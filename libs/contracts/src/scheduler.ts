/**
 * The context pool's protocol: workers report their slots, the scheduler (leader) hands out
 * fenced, expiring leases on them.
 *
 * | message | sender | handler |
 * |---|---|---|
 * | `WorkerHeartbeat` | `services/inference-worker/src/heartbeat.ts` | `services/scheduler/src/service.ts` → `pool.ts` |
 * | `SchedulerDispatch` (lease + generate in one hop) | `services/api/src/dispatch.ts` | `services/scheduler/src/service.ts`, which relays it to the leased worker's `WorkerGenerate` |
 * | `LeaseAcquire`, `LeaseRenew`, `LeaseRelease`, `LeaseCancel` | `services/api/src/lease.ts` | `services/scheduler/src/service.ts` → `pool.ts` |
 * | `LeaseReleased` | `services/inference-worker/src/service.ts` | `services/scheduler/src/service.ts` → `pool.ts` |
 * | `WorkerControl` | `services/scheduler/src/service.ts` | `services/inference-worker/src/service.ts` |
 * | `SchedulerState` | `services/api/src/status.ts` | `services/scheduler/src/service.ts` |
 * | `SchedulerDrain` | `services/api/src/routes/workers.ts` | `services/scheduler/src/service.ts` |
 *
 * See `docs/scheduler.md` for states, timeouts and failure cases.
 *
 * @module
 */
import { z } from "zod";
import { CacheStrategy, DEFAULT_CACHE_STRATEGY } from "./cache.ts";
import { defineEvent, defineRpc, defineStream } from "./define.ts";
import { SubjectToken, subject } from "./subjects.ts";
import { GenerateChunk, GenerateEnd, GenerateRequest } from "./worker.ts";

/** Where a session's KV state was found when its lease was granted. */
export const Residency = z.enum(["l1", "l2", "l3", "cold"]);
/** Where a session's KV state was found when its lease was granted. */
export type Residency = z.infer<typeof Residency>;

/** A session as the pool knows it: tenant-scoped, so two tenants' ids never meet. */
export const SessionKey = z.string().min(3).max(300);

/**
 * The one spelling of a session's key: `<tenant>/<session id>`, so two tenants' ids never meet.
 * The pool, the workers' slots and tiers, the api's limits and memory client, and persistence's
 * indexes all key sessions by it.
 */
export function sessionKey(tenant: string, sessionId: string): string {
  return `${tenant}/${sessionId}`;
}

/** One slot in a heartbeat. */
export const SlotReport = z.object({
  slot: z.number().int().nonnegative(),
  busy: z.boolean(),
  /** Tokens held in the slot's KV cache. */
  tokens: z.number().int().nonnegative(),
  /** The session whose state the slot holds, if any. */
  session: SessionKey.nullable(),
  /** Highest fencing token the worker has accepted for this slot. */
  fencing_token: z.number().int().nonnegative(),
  /**
   * Idle, but the lease at `fencing_token` is kept by its holder as a slot credit: the lease is
   * alive (the pool does not end it as it ends the lease of a slot reported idle).
   */
  held: z.boolean().optional(),
});
/** One slot in a heartbeat. */
export type SlotReport = z.infer<typeof SlotReport>;

/** A worker's periodic report; its first one announces it. */
export const Heartbeat = z.object({
  worker_id: SubjectToken,
  model: z.string(),
  fingerprint: z.string(),
  ctx_size: z.number().int().positive(),
  slots: z.array(SlotReport),
  /** Sessions snapshotted to this worker's disk (L2), with their size. */
  l2: z.array(z.object({ session: SessionKey, bytes: z.number().int().nonnegative(), tokens: z.number().int().nonnegative() })),
  draining: z.boolean(),
  /** Heartbeat period the worker uses, in ms. */
  interval_ms: z.number().int().positive(),
  sent_at: z.number(),
});
/** A worker's periodic report. */
export type Heartbeat = z.infer<typeof Heartbeat>;

/** `<prefix>.worker.heartbeat.<worker_id>`. */
export const WorkerHeartbeat = defineEvent({
  name: "worker.heartbeat",
  subject: (prefix, p: { workerId: string }) => subject(prefix, "worker", "heartbeat", p.workerId),
  data: Heartbeat,
});
/** Every worker's heartbeat (for the scheduler's subscription). */
export const AnyWorkerHeartbeat = defineEvent({
  name: "worker.heartbeat",
  subject: (prefix) => `${prefix}.worker.heartbeat.*`,
  data: Heartbeat,
});

/** A granted lease: the right to drive one slot until `expires_at`. */
export const Lease = z.object({
  lease_id: z.string(),
  fencing_token: z.number().int().positive(),
  worker_id: SubjectToken,
  slot: z.number().int().nonnegative(),
  session: SessionKey.nullable(),
  holder: z.string(),
  granted_at: z.number(),
  expires_at: z.number(),
  residency: Residency,
  /** Tokens of the session's state the worker already holds (L1) or can restore. */
  cached_tokens: z.number().int().nonnegative(),
  /** The request it was granted for (so a caller that gave up can cancel it). */
  request_id: z.string().optional(),
  /** A slot credit: kept by its holder across requests until revoked or idle (docs/scheduler.md). */
  credit: z.boolean().optional(),
});
/** A granted lease. */
export type Lease = z.infer<typeof Lease>;

/**
 * How long a worker keeps an idle slot credit for its holder before it releases the lease itself
 * (`LeaseReleased`). The holder uses a credit only while it has been idle less than half of this
 * on the holder's own clock, so a credit is never used after the worker let it go (and if one
 * were, the worker refuses its ended token: `conflict`, nothing ran).
 */
export const CREDIT_IDLE_MS = 1000;

/** The scheduler's KV buckets under a prefix (dots are not allowed in bucket names): its leader claim, its durable state. */
export function schedulerBuckets(prefix: string): { leader: string; state: string } {
  const p = prefix.replaceAll(".", "_");
  return { leader: `${p}_scheduler_leader`, state: `${p}_scheduler_state` };
}

/** Ask for `count` slots (all or nothing) for a model, with session affinity. */
export const LeaseAcquire = defineRpc({
  name: "scheduler.lease.acquire",
  subject: (prefix) => subject(prefix, "scheduler", "lease", "acquire"),
  request: z.object({
    request_id: z.string().min(1).max(200),
    /** Who asks (an api instance); shown in status. */
    holder: z.string().min(1).max(200),
    tenant: z.string().min(1).max(64),
    model: z.string().min(1),
    /** Tenant-scoped session key, for affinity; only the first slot of a batch carries it. */
    session: SessionKey.nullable().default(null),
    count: z.number().int().min(1).max(32).default(1),
    strategy: CacheStrategy.default(DEFAULT_CACHE_STRATEGY),
    /** How long the caller is willing to wait for a slot, in ms. */
    wait_ms: z.number().int().min(0).max(600_000).default(30_000),
    /** Lease duration asked for; the holder renews long generations. */
    ttl_ms: z.number().int().min(1000).max(600_000).default(30_000),
  }),
  response: z.object({ leases: z.array(Lease).min(1) }),
});

/**
 * Lease and generate in one hop, for one sequence: the leader grants a lease (waiting up to
 * `wait_ms` for a slot, with session affinity) and relays `generate`, with the lease added, to
 * the leased worker's `WorkerGenerate`, keeping the caller's reply inbox, so the worker streams
 * straight back to the caller. The worker releases the lease itself (`LeaseReleased`) and its
 * heartbeats keep it alive while it runs: the caller sends nothing else. Errors before the
 * relay (`overloaded`, `unavailable`…) reach the caller as the stream's error.
 */
export const SchedulerDispatch = defineStream({
  name: "scheduler.dispatch",
  subject: (prefix) => subject(prefix, "scheduler", "dispatch"),
  request: z.object({
    /** Who asks (an api instance), for `LeaseCancel` and status. */
    holder: z.string().min(1).max(200),
    tenant: z.string().min(1).max(64),
    strategy: CacheStrategy.default(DEFAULT_CACHE_STRATEGY),
    /** How long the caller is willing to wait for a slot, in ms. */
    wait_ms: z.number().int().min(0).max(600_000).default(30_000),
    /** Lease duration; heartbeats that show the generation running extend it. */
    ttl_ms: z.number().int().min(1000).max(600_000).default(30_000),
    /**
     * Ask that the lease become a slot credit (kept by the worker for the caller after the
     * generation), also for a session's sequence (the caller then sends the session's next turn
     * straight to that slot). Granted only while no request waits for a slot.
     */
    credit: z.boolean().default(false),
    /**
     * The sequence (a `GenerateRequest`); its `request_id` names the lease (for `LeaseCancel`),
     * its `session` the affinity. The scheduler reads only those and the model, and relays the
     * rest untouched: the worker, its receiver, validates the whole request once.
     */
    generate: z.looseObject({
      request_id: GenerateRequest.shape.request_id,
      model: GenerateRequest.shape.model,
      session: GenerateRequest.shape.session,
    }),
  }),
  chunk: GenerateChunk,
  end: GenerateEnd,
});

/**
 * A worker ended a leased generation (done, failed or aborted): one-way, no reply. Fencing makes
 * it safe to lose or deliver late: the pool ignores it unless the lease id and token match the
 * slot's live lease, and a lost one is made good by the next heartbeat that shows the slot idle
 * at or past the lease's token.
 */
export const LeaseReleased = defineEvent({
  name: "scheduler.lease.released",
  subject: (prefix) => subject(prefix, "scheduler", "lease", "released"),
  data: z.object({
    lease_id: z.string(),
    fencing_token: z.number().int().positive(),
    worker_id: SubjectToken,
    slot: z.number().int().nonnegative(),
    /** Tokens the slot holds for the lease's session now (0: nothing worth keeping). */
    tokens_in_slot: z.number().int().nonnegative(),
    /**
     * The session the slot holds now, when it is not the one the lease was granted for: a slot
     * credit serves its holder's requests, sessionless or of any session, under one lease.
     */
    session: SessionKey.nullable().optional(),
  }),
});

/** Extend a lease. */
export const LeaseRenew = defineRpc({
  name: "scheduler.lease.renew",
  subject: (prefix) => subject(prefix, "scheduler", "lease", "renew"),
  request: z.object({
    lease_id: z.string(),
    fencing_token: z.number().int().positive(),
    ttl_ms: z.number().int().min(1000).max(600_000).default(30_000),
  }),
  response: z.object({ expires_at: z.number() }),
});

/** Give a slot back, saying what it now holds. */
export const LeaseRelease = defineRpc({
  name: "scheduler.lease.release",
  subject: (prefix) => subject(prefix, "scheduler", "lease", "release"),
  request: z.object({
    lease_id: z.string(),
    fencing_token: z.number().int().positive(),
    /** Tokens the slot holds for its session after the request (0: nothing worth keeping). */
    tokens_in_slot: z.number().int().nonnegative().default(0),
  }),
  response: z.object({ released: z.boolean() }),
});

/**
 * The caller gave up on a request (its client went away): drop its waiting acquire, and release
 * any lease already granted for it, instead of holding a slot until the lease expires.
 */
export const LeaseCancel = defineRpc({
  name: "scheduler.lease.cancel",
  subject: (prefix) => subject(prefix, "scheduler", "lease", "cancel"),
  request: z.object({ request_id: z.string().min(1).max(200), holder: z.string().min(1).max(200) }),
  response: z.object({ cancelled: z.number().int().nonnegative() }),
});

/** What the scheduler tells one worker. */
export const Control = z.discriminatedUnion("type", [
  /** A lease on this slot expired or was revoked: stop what runs there under an older token. */
  z.object({ type: z.literal("abort"), slot: z.number().int().nonnegative(), fencing_token: z.number().int().positive() }),
  /**
   * Someone waits for a slot: give back the slot credit at this token, at once if it is idle,
   * else when its running generation ends (it is not aborted).
   */
  z.object({ type: z.literal("revoke"), slot: z.number().int().nonnegative(), fencing_token: z.number().int().positive() }),
  /** Move every resident session and L2 snapshot to L3; the scheduler gives the worker no new leases. */
  z.object({ type: z.literal("drain") }),
]);
/** What the scheduler tells one worker. */
export type Control = z.infer<typeof Control>;

/** `<prefix>.worker.<id>.control`. */
export const WorkerControl = defineEvent({
  name: "worker.control",
  subject: (prefix, p: { workerId: string }) => subject(prefix, "worker", p.workerId, "control"),
  data: Control,
});

/** Drain a worker: no new leases, its sessions move to L3. Sender: `services/api/src/routes/workers.ts`. */
export const SchedulerDrain = defineRpc({
  name: "scheduler.workers.drain",
  subject: (prefix) => subject(prefix, "scheduler", "workers", "drain"),
  request: z.object({ worker_id: SubjectToken }),
  response: z.object({ worker_id: z.string(), draining: z.literal(true) }),
});

/** The scheduler's view, for status and tests. */
export const SchedulerState = defineRpc({
  name: "scheduler.state",
  subject: (prefix) => subject(prefix, "scheduler", "state"),
  request: z.object({}).strict(),
  response: z.object({
    leader: z.string(),
    term: z.number().int().nonnegative(),
    fencing_token: z.number().int().nonnegative(),
    workers: z.array(
      z.object({
        worker_id: z.string(),
        model: z.string(),
        alive: z.boolean(),
        draining: z.boolean(),
        last_heartbeat_ms_ago: z.number(),
        slots: z.array(
          z.object({
            slot: z.number().int(),
            session: SessionKey.nullable(),
            tokens: z.number().int(),
            lease_id: z.string().nullable(),
            expires_at: z.number().nullable(),
          }),
        ),
      }),
    ),
    leases: z.number().int().nonnegative(),
    queued: z.number().int().nonnegative(),
  }),
});
