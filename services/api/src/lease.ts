/**
 * The api's side of the lease protocol: acquire slots from the scheduler (all or nothing for a
 * batch), renew them while a long generation runs, and release them saying what the slot now
 * holds. When the scheduler cannot be reached, callers fall back to the workers' queue group.
 *
 * Sends `LeaseAcquire`, `LeaseRenew`, `LeaseRelease` (handled by `services/scheduler/src/service.ts`).
 *
 * @module
 */
import { type Bus, BusError } from "@atlas/bus";
import { type CacheStrategy, type Lease, LeaseAcquire, LeaseRelease, LeaseRenew } from "@atlas/contracts";

/** Lease duration asked for; a generation that runs longer renews at a third of it. */
export const LEASE_TTL_MS = 30_000;
/** How long a request waits for a slot in all before it gets `overloaded` (→ 503). */
export const LEASE_WAIT_MS = 30_000;
/**
 * How long one acquire call may wait at the scheduler. Kept short so a leader that dies while
 * holding the request is noticed quickly (the call times out and is asked again, of the new
 * leader); a wait that runs out is simply asked again until `LEASE_WAIT_MS` is spent.
 */
export const LEASE_ATTEMPT_MS = 4000;

/** What a request asks of the pool. */
export interface LeaseAsk {
  requestId: string;
  tenant: string;
  model: string;
  /** Session id as the client gave it; scoped by tenant here. */
  sessionId: string | undefined;
  count: number;
  strategy: CacheStrategy;
  signal: AbortSignal;
}

/** Leases, or `undefined` when the scheduler is unreachable (degraded: use the queue group). */
export async function acquireLeases(bus: Bus, ask: LeaseAsk): Promise<Lease[] | undefined> {
  const deadline = Date.now() + LEASE_WAIT_MS;
  let timeouts = 0;
  for (;;) {
    const waitMs = Math.max(0, Math.min(LEASE_ATTEMPT_MS, deadline - Date.now()));
    try {
      const r = await bus.call(
        LeaseAcquire,
        {
          request_id: ask.requestId,
          holder: bus.instance,
          tenant: ask.tenant,
          model: ask.model,
          session: ask.sessionId === undefined ? null : sessionKey(ask.tenant, ask.sessionId),
          count: ask.count,
          strategy: ask.strategy,
          wait_ms: waitMs,
          ttl_ms: LEASE_TTL_MS,
        },
        { timeoutMs: waitMs + 1000, signal: ask.signal, requestId: ask.requestId },
      );
      return r.leases;
    } catch (err) {
      if (!(err instanceof BusError) || ask.signal.aborted) throw err;
      const timeLeft = deadline - Date.now() > 0;
      // Every slot busy for this attempt's wait: ask again while the request's budget lasts.
      if (err.code === "overloaded" && timeLeft) continue;
      // No reply: the leader may have died holding the request; a standby takes over in ~2 s.
      if (err.code === "timeout" && timeLeft && ++timeouts < 3) continue;
      // Nobody answers the lease subject (no scheduler at all): degrade to the queue group.
      if (err.code === "unavailable" || err.code === "timeout") return undefined;
      throw err;
    }
  }
}

/** The pool's name for a session: tenant-scoped, so two tenants' ids never meet. */
export function sessionKey(tenant: string, sessionId: string): string {
  return `${tenant}/${sessionId}`;
}

/** Renews `lease` every third of its TTL until `signal` fires; returns a stop function. */
export function keepRenewed(bus: Bus, lease: Lease): () => void {
  const timer = setInterval(() => {
    bus
      .call(LeaseRenew, { lease_id: lease.lease_id, fencing_token: lease.fencing_token, ttl_ms: LEASE_TTL_MS }, { timeoutMs: 2000 })
      .catch(() => {
        // a failed renewal shows up as the worker aborting the generation: nothing to do here
      });
  }, LEASE_TTL_MS / 3);
  timer.unref();
  return () => clearInterval(timer);
}

/** Gives a lease back, best effort (an unreleased lease expires on its own). */
export function releaseLease(bus: Bus, lease: Lease, tokensInSlot: number): void {
  bus
    .call(LeaseRelease, { lease_id: lease.lease_id, fencing_token: lease.fencing_token, tokens_in_slot: tokensInSlot }, { timeoutMs: 2000 })
    .catch(() => {});
}
