/**
 * The scheduler: owns the context pool. Every instance follows the workers' heartbeats; one of
 * them is leader (a claim in KV, renewed; standbys take over when it goes stale:
 * `leader_claim.ts`) and only the leader answers lease requests, expires leases and declares
 * workers dead. A new leader rebuilds from KV (reserved fencing block, live leases) plus the
 * heartbeats.
 *
 * Handles: `SchedulerDispatch` (relayed to the leased worker's `WorkerGenerate`), `LeaseAcquire`,
 * `LeaseRenew`, `LeaseRelease`, `LeaseReleased`, `LeaseCancel`, `SchedulerDrain`,
 * `SchedulerState` (leader only) and `AnyWorkerHeartbeat` (all). Sends: `WorkerControl`.
 * Lease records reach KV write-behind (`lease_journal.ts`).
 *
 * @module
 */
import { BusError, type Subscription } from "@atlas/bus";
import { createPolicy } from "@atlas/cache-policy";
import {
  AnyWorkerHeartbeat,
  type GenerateRequest,
  LeaseAcquire,
  LeaseCancel,
  LeaseRelease,
  LeaseReleased,
  LeaseRenew,
  MemoryDeleted,
  SchedulerDispatch,
  SchedulerDrain,
  SchedulerState,
  ServiceName,
  sessionKey,
  WorkerControl,
  WorkerGenerate,
} from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { LeaderClaim } from "./leader_claim.ts";
import { LeaseJournal } from "./lease_journal.ts";
import { type AcquireRequest, type LeaseRecord, Pool, type PoolAction, type PoolOptions } from "./pool.ts";
import { SchedulerStore } from "./store.ts";
import { SchedulerTiming } from "./timing.ts";
import { WaitQueue } from "./wait_queue.ts";

/** Starts a scheduler instance (leader or standby). */
export async function startScheduler(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus, log } = ctx;
  const store = await SchedulerStore.open(bus.jetstream, bus.prefix, SchedulerTiming.claimExpiryMs);
  const claim = new LeaderClaim(store, bus.instance, SchedulerTiming.claim, log);
  // Lease records reach KV write-behind, once per tick: a grant is answered from memory.
  let journal = new LeaseJournal(store);
  // Every strategy watches every use, so a request can ask for any of them when it needs a victim.
  // Sizes and costs are in tokens: what a resident session saves from being recomputed.
  const policies = { lru: createPolicy("lru"), lfu: createPolicy("lfu"), adaptive: createPolicy("adaptive") };
  const poolOptions: PoolOptions = {
    heartbeatTimeoutMs: 3 * SchedulerTiming.heartbeatMs,
    chooseVictim: (candidates, strategy) => policies[strategy].victim({ candidates }) ?? candidates[0],
    observer: {
      used: (session, tokens) => {
        for (const p of Object.values(policies)) p.touch(session, tokens, { cost: tokens });
      },
      left: (session) => {
        for (const p of Object.values(policies)) p.evict(session);
      },
    },
  };
  let pool = new Pool(poolOptions);
  let term = 0;
  /** Whether this instance leads: it holds the claim and serves the leader's subjects. */
  let leading = false;
  let fencingEnd = 0;
  let leaderSince = 0;
  let leaderSubs: Subscription[] = [];
  let stopped = false;
  const queue = new WaitQueue();

  // Every instance follows the heartbeats, so a standby knows the workers when it takes over.
  bus.subscribe(
    AnyWorkerHeartbeat,
    (hb) => {
      const ended = pool.heartbeat(hb, Date.now());
      if (leading) {
        control(ended);
        void serveQueue();
      }
    },
    {},
  );

  // A deleted session loses its residency (workers drop its snapshots themselves).
  bus.subscribe(MemoryDeleted, (e) => pool.forgetSession(sessionKey(e.tenant, e.session_id)), {});

  const control = (actions: PoolAction[]) => {
    for (const a of actions) {
      if (a.type === "abort") {
        bus.publish(WorkerControl, { type: "abort", slot: a.slot, fencing_token: a.fencing_token }, { workerId: a.worker });
        log.warn({ worker: a.worker, slot: a.slot, fencing_token: a.fencing_token }, "Lease expired: slot reclaimed");
      } else if (a.type === "revoke") {
        bus.publish(WorkerControl, { type: "revoke", slot: a.slot, fencing_token: a.fencing_token }, { workerId: a.worker });
      } else if (a.type === "lease-removed") journal.forget(a.lease_id);
      else if (a.type === "worker-dead") log.warn({ worker: a.worker }, `Worker "${a.worker}" missed 3 heartbeats: declared dead`);
    }
  };

  /** Grants from the pool; the fencing block is persisted before any token of it is used, the leases write-behind. */
  const tryGrant = async (req: AcquireRequest): Promise<LeaseRecord[] | "busy" | "no_worker"> => {
    if (pool.fencingToken + req.count > fencingEnd) {
      const block = await store.reserveFencing().catch((err: unknown) => {
        throw new BusError("unavailable", "The scheduler could not reserve fencing tokens (KV did not answer); retry", {
          retryAfterS: 1,
          cause: err,
        });
      });
      fencingEnd = block.end;
    }
    const r = pool.acquire(req, Date.now());
    if (!r.ok) return r.reason;
    // An evicted session needs no message: the worker snapshots it to L2 when the new lease's
    // request takes the slot over (it knows which session the slot held).
    for (const l of r.leases) journal.record(l);
    return r.leases;
  };

  let serving = false;
  const serveQueue = async () => {
    if (serving) return;
    serving = true;
    try {
      for (const waiter of queue.fairOrder()) {
        const r = await tryGrant(waiter.request);
        if (Array.isArray(r)) queue.resolve(waiter, r);
      }
    } catch (err) {
      // (A fencing block KV could not reserve: the waiters stay queued until the next tick or their wait ends.)
      log.warn({ err }, "Could not serve the waiting requests; trying again at the next tick");
    } finally {
      serving = false;
    }
  };

  /** Grants at once, or waits in the fair queue up to `waitMs`; throws `unavailable` when no worker serves the model. */
  const grantOrWait = async (request: AcquireRequest, tenant: string, waitMs: number, signal: AbortSignal): Promise<LeaseRecord[]> => {
    const r = await tryGrant(request);
    if (Array.isArray(r)) return r;
    // Right after a takeover the workers' next heartbeats are still on their way.
    const warming = Date.now() - leaderSince < 1.5 * SchedulerTiming.heartbeatMs;
    if (r === "no_worker" && !warming) {
      // `param: "model"`: the answer is about the model, not the scheduler (the api does not fall back to the queue group).
      throw new BusError("unavailable", `No live worker serves model "${request.model}"`, { retryAfterS: 2, param: "model" });
    }
    // A request about to wait gets the slot credits back: they are for idle capacity only.
    if (waitMs > 0) control(pool.revokeCredits(request.model));
    return queue.wait(tenant, { ...request, credit: false }, Math.min(waitMs, 600_000), signal);
  };

  const becomeLeader = async (from: string | undefined) => {
    term += 1;
    leaderSince = Date.now();
    const block = await store.reserveFencing();
    fencingEnd = block.end;
    const fresh = new Pool({ ...poolOptions, fencingStart: block.start });
    // A fresh pool: the workers come back with their next heartbeats (within a second; acquires
    // wait meanwhile, see \`warming\`), their leases from KV and from those heartbeats.
    pool = fresh;
    journal = new LeaseJournal(store);
    const leases = await store.leases();
    const now = Date.now();
    for (const l of leases) {
      pool.restoreLease(l, now);
      journal.adopt(l);
    }
    log.info(
      { term, fencing_from: block.start, leases: leases.length, ...(from === undefined ? {} : { took_over_from: from }) },
      "Became the scheduler leader",
    );
    leaderSubs = [
      bus.serve(
        LeaseAcquire,
        async (req, c) => ({
          leases: await grantOrWait(
            {
              request_id: req.request_id,
              holder: req.holder,
              model: req.model,
              session: req.session,
              count: req.count,
              strategy: req.strategy,
              ttl_ms: req.ttl_ms,
            },
            req.tenant,
            req.wait_ms,
            c.signal,
          ),
        }),
        { queue: false },
      ),
      bus.serve(
        LeaseRenew,
        async (req) => {
          const lease = pool.renew(req.lease_id, req.fencing_token, req.ttl_ms, Date.now());
          if (lease === undefined) throw new BusError("conflict", `Cannot renew lease "${req.lease_id}": it expired or was revoked`);
          journal.record(lease);
          return { expires_at: lease.expires_at };
        },
        { queue: false },
      ),
      bus.serve(
        LeaseRelease,
        async (req) => {
          const released = pool.release(req.lease_id, req.fencing_token, req.tokens_in_slot);
          if (released) journal.forget(req.lease_id);
          void serveQueue();
          return { released };
        },
        { queue: false },
      ),
      // One hop: lease a slot and relay the request to its worker, which streams to the caller.
      bus.serveRelay(
        SchedulerDispatch,
        WorkerGenerate,
        async (req, c) => {
          const g = req.generate;
          const [lease] = await grantOrWait(
            {
              request_id: g.request_id,
              holder: req.holder,
              model: g.model,
              session: g.session ?? null,
              count: 1,
              strategy: req.strategy,
              ttl_ms: req.ttl_ms,
              // A slot credit only for idle capacity: never while anyone waits for a slot.
              credit: req.credit && queue.size === 0,
            },
            req.tenant,
            req.wait_ms,
            c.signal,
          );
          if (lease === undefined) throw new BusError("internal", "The pool granted no lease");
          if (c.signal.aborted) {
            // The caller left while the request waited: give the slot back at once.
            if (pool.release(lease.lease_id, lease.fencing_token, 0)) journal.forget(lease.lease_id);
            throw new BusError("cancelled", "The caller went away before its slot was granted");
          }
          return {
            params: { workerId: lease.worker_id },
            // Relayed untouched but for the lease; the worker validates the whole request.
            request: {
              ...g,
              lease: {
                lease_id: lease.lease_id,
                fencing_token: lease.fencing_token,
                slot: lease.slot,
                ...(lease.credit === true ? { keep: true } : {}),
              },
            } as GenerateRequest,
          };
        },
        { queue: false },
      ),
      // The worker gives the slot back when its generation ends; fencing makes a late one harmless.
      bus.subscribe(
        LeaseReleased,
        (e) => {
          if (pool.release(e.lease_id, e.fencing_token, e.tokens_in_slot, e.session)) journal.forget(e.lease_id);
          void serveQueue();
        },
        {},
      ),
      bus.serve(
        LeaseCancel,
        (req) => {
          const cancelled = queue.cancel(req.request_id, req.holder) + pool.cancel(req.request_id, req.holder);
          if (cancelled > 0) void serveQueue();
          return { cancelled };
        },
        { queue: false },
      ),
      bus.serve(
        SchedulerDrain,
        (req) => {
          if (!pool.drain(req.worker_id)) throw new BusError("not_found", `Unknown worker "${req.worker_id}"`, { param: "worker_id" });
          bus.publish(WorkerControl, { type: "drain" }, { workerId: req.worker_id });
          log.info({ worker: req.worker_id }, "Draining worker");
          return { worker_id: req.worker_id, draining: true as const };
        },
        { queue: false },
      ),
      bus.serve(
        SchedulerState,
        () => ({
          leader: bus.instance,
          term,
          fencing_token: pool.fencingToken,
          workers: pool.snapshot(Date.now()),
          leases: pool.leases.size,
          queued: queue.size,
        }),
        { queue: false },
      ),
    ];
  };

  const stepDown = (why: string) => {
    if (!leading) return;
    leading = false;
    for (const s of leaderSubs) s.unsubscribe();
    leaderSubs = [];
    queue.failAll(new BusError("unavailable", "The scheduler leader changed; retry", { retryAfterS: 1 }));
    log.warn({ why }, "Stepped down as scheduler leader");
  };

  /** A tick's flush, or the last one at stop (`drain`: the next leader gets an exact table); the claim's warning covers KV down. */
  const flushJournal = async (last = false) => {
    const r = await (last ? journal.drain() : journal.flush());
    const then = last ? "the next leader rebuilds them from heartbeats" : "retrying at the next tick";
    if (r.failed > 0 && !claim.unreachable) log.warn(r, `Some lease records could not be written to KV; ${then}`);
  };

  /** One step of the claim (`leader_claim.ts`): it may wait on KV for seconds, so it runs beside the pool's tick. */
  const stepClaim = async () => {
    const step = await claim.step(Date.now());
    if (stopped) {
      await claim.resign();
      return;
    }
    if (step.type === "became") {
      try {
        await becomeLeader(step.from);
        leading = true;
      } catch (err) {
        log.error({ err }, "Could not take over as the scheduler leader; giving the claim up");
        await claim.resign();
      }
    } else if (step.type === "lost") stepDown(step.why);
  };
  let claiming: Promise<void> | undefined;
  const tick = () => {
    if (stopped) return;
    claiming ??= stepClaim()
      .catch((err: unknown) => log.error({ err }, "Scheduler claim step failed"))
      .finally(() => {
        claiming = undefined;
      });
    if (leading) {
      const now = Date.now();
      control(pool.tick(now));
      queue.expire(now);
      void serveQueue();
      if (!journal.busy) void flushJournal(); // a tick does not join (and report again) a flush still waiting on KV
    }
  };
  const timer = setInterval(tick, SchedulerTiming.tickMs);
  tick();
  await claiming; // the first claim is tried before the service says it started

  return {
    health: () => ({
      state: "ok",
      checks: { nats: { ok: bus.connected } },
      // claim_unreachable: leading on while KV does not answer (a stream election; docs/scheduler.md).
      details: {
        role: leading ? "leader" : "standby",
        term,
        leases: pool.leases.size,
        queued: queue.size,
        claim_unreachable: claim.unreachable,
      },
    }),
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      if (leading) await flushJournal(true);
      stepDown("shutting down");
      await claim.resign();
    },
  };
}

/** The scheduler service, for `runService` and in-process tests. */
export const schedulerService: ServiceDefinition = {
  name: ServiceName.scheduler,
  description: "Context pool: worker registry, leases, session affinity",
  start: startScheduler,
};
