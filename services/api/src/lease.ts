/**
 * The api's side of the two-step lease protocol, for batches (`batch_size` > 1): acquire slots
 * from the scheduler (all or nothing), and give back a lease whose generation never reached its
 * worker. A generation that runs is kept alive by its worker's heartbeats and released by the
 * worker (one sequence per lease goes through `SchedulerDispatch` instead: `dispatch.ts`).
 * When the scheduler cannot be reached, callers fall back to the workers' queue group.
 *
 * Sends `LeaseAcquire`, `LeaseRelease`, `LeaseCancel` (handled by `services/scheduler/src/service.ts`),
 * through the scheduler's circuit breaker when one is given: while it is open, no lease is asked
 * for (the request degrades at once) and releases wait and retry.
 *
 * @module
 */
import { type Bus, BusError } from "@atlas/bus";
import { type CacheStrategy, type Lease, LeaseAcquire, LeaseCancel, LeaseRelease, sessionKey } from "@atlas/contracts";
import { type CircuitBreaker, CircuitOpenError, isUnreachable } from "./breaker.ts";

/** Lease duration asked for; the worker's heartbeats extend it while the generation runs. */
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

/** How {@link askScheduler} asks. */
export interface AskOptions {
  signal: AbortSignal;
  /** The request id the scheduler knows the request by, for `LeaseCancel` when the client leaves. */
  requestId: string;
  /** The scheduler's circuit breaker; while it is open nothing is asked (degraded at once). */
  breaker?: CircuitBreaker | undefined;
  /** Codes retried a few times besides `timeout` (e.g. `conflict`, a stale lease after a failover). */
  retry?: readonly string[];
  /** An error that belongs to the answer itself (e.g. a stream that had started): thrown as is. */
  final?: (err: unknown) => boolean;
}

/**
 * Asks the scheduler (`ask(waitMs)`, one attempt waiting up to `waitMs` for a slot) until it
 * answers, the request's wait budget (`LEASE_WAIT_MS`) is spent, or no scheduler can be reached:
 * then `undefined` (degraded: use the queue group). Every slot busy (`overloaded`): asked again
 * while the budget lasts; no reply (`timeout`: a leader that died holding the request, a standby
 * takes over in ~2 s) and the `retry` codes: asked again up to twice. A client that leaves gets
 * its waiting or granted lease cancelled.
 */
export async function askScheduler<T>(bus: Bus, options: AskOptions, ask: (waitMs: number) => Promise<T>): Promise<T | undefined> {
  const { signal, breaker } = options;
  const deadline = Date.now() + LEASE_WAIT_MS;
  let retries = 0;
  for (;;) {
    const attempt = breaker?.attempt();
    if (breaker !== undefined && attempt === undefined) return undefined;
    const waitMs = Math.max(0, Math.min(LEASE_ATTEMPT_MS, deadline - Date.now()));
    try {
      const answer = await ask(waitMs);
      attempt?.success();
      return answer;
    } catch (err) {
      if (signal.aborted) {
        attempt?.release();
        // The client went away while this request waited: free whatever the scheduler queued or
        // granted for it, rather than hold a slot until the lease expires.
        bus.call(LeaseCancel, { request_id: options.requestId, holder: bus.instance }, { timeoutMs: 2000 }).catch(() => {});
        throw err;
      }
      if (options.final?.(err) === true || !(err instanceof BusError)) {
        attempt?.success();
        throw err;
      }
      if (isUnreachable(err)) attempt?.failure();
      else attempt?.success(); // it answered (overloaded, no worker…): alive
      const timeLeft = deadline - Date.now() > 0;
      if (err.code === "overloaded" && timeLeft) continue;
      if ((err.code === "timeout" || options.retry?.includes(err.code) === true) && timeLeft && ++retries < 3) continue;
      // The scheduler says no live worker serves the model: the queue group would hand the request
      // to another model's worker, so the client gets the 503 (with Retry-After) instead.
      if (err.code === "unavailable" && err.origin === "remote" && err.param === "model") throw err;
      // Nobody answers (no scheduler at all): degrade to the queue group.
      if (err.code === "unavailable" || err.code === "timeout") return undefined;
      throw err;
    }
  }
}

/** Leases, or `undefined` when the scheduler is unreachable or its breaker open (degraded: use the queue group). */
export async function acquireLeases(bus: Bus, ask: LeaseAsk, breaker?: CircuitBreaker): Promise<Lease[] | undefined> {
  const r = await askScheduler(bus, { signal: ask.signal, requestId: ask.requestId, breaker }, (waitMs) =>
    bus.call(
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
    ),
  );
  return r?.leases;
}

/**
 * Gives a lease back. While the scheduler cannot be reached (a leader failover, its breaker
 * open) the release is retried with backoff until the lease would have expired anyway: a new
 * leader rebuilds the pool from KV, so a release lost in the failover would otherwise keep the
 * slot out of use until the lease's expiry. Releasing is idempotent (lease id + fencing token).
 */
export function releaseLease(bus: Bus, lease: Lease, tokensInSlot: number, breaker?: CircuitBreaker): void {
  const deadline = Date.now() + LEASE_TTL_MS;
  const attempt = async (n: number): Promise<void> => {
    try {
      await through(breaker, () =>
        bus.call(
          LeaseRelease,
          { lease_id: lease.lease_id, fencing_token: lease.fencing_token, tokens_in_slot: tokensInSlot },
          { timeoutMs: 2000 },
        ),
      );
    } catch (err) {
      // The scheduler answered (the lease had expired or was revoked): nothing left to give back.
      if (!(isUnreachable(err) || err instanceof CircuitOpenError)) return;
      const delay = Math.min(2000, 100 * 2 ** n);
      if (!bus.connected || Date.now() + delay > deadline) return;
      await new Promise((r) => setTimeout(r, delay).unref());
      return attempt(n + 1);
    }
  };
  void attempt(0);
}

function through<T>(breaker: CircuitBreaker | undefined, fn: () => Promise<T>): Promise<T> {
  return breaker === undefined ? fn() : breaker.run(fn);
}
