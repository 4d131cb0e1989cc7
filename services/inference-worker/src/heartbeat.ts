/**
 * The worker's side of the lease protocol: per-slot fencing (a request whose token is older
 * than the newest one seen for its slot, or whose lease has ended, is refused, and a newer one
 * takes the slot over from an older generation), slot credits (a lease kept for its holder
 * between requests, given back when idle `CREDIT_IDLE_MS`, revoked or drained), what session
 * each slot holds, and the heartbeat that reports it all.
 *
 * Sends `WorkerHeartbeat` (handled by `services/scheduler/src/service.ts`).
 *
 * @module
 */
import { type Bus, BusError } from "@atlas/bus";
import { type CacheStrategy, CREDIT_IDLE_MS, type Heartbeat, WorkerHeartbeat } from "@atlas/contracts";

/** Stops a generation with `reason` (its stream's `abort`, which fires the generation's signal). */
export type Stop = (reason: unknown) => void;

/** A slot credit the worker keeps for its holder while the slot is idle. */
interface Held {
  readonly token: number;
  readonly timer: ReturnType<typeof setTimeout>;
  /** Gives the lease back to the scheduler (`LeaseReleased`). */
  readonly release: () => void;
}

/** Per-slot fencing and session bookkeeping. */
export class SlotGuard {
  readonly #fencing: number[];
  readonly #sessions: (string | null)[];
  /** The eviction strategy each slot's session last named (`GenerateRequest.cache_strategy`). */
  readonly #strategies: (CacheStrategy | undefined)[];
  /** Per slot: how to stop the generation running there (its stream's `abort`). */
  readonly #running: (Stop | null)[];
  readonly #runningToken: number[];
  /** Per slot: the highest token whose lease has ended (released, given back or revoked). */
  readonly #ended: number[];
  /** Per slot: the highest token the scheduler revoked (not kept as a credit at its end). */
  readonly #revoked: number[];
  readonly #held: (Held | null)[];
  readonly #idleMs: number;

  constructor(slots: number, options: { creditIdleMs?: number } = {}) {
    this.#ended = Array.from({ length: slots }, () => 0);
    this.#revoked = Array.from({ length: slots }, () => 0);
    this.#held = Array.from({ length: slots }, () => null);
    this.#idleMs = options.creditIdleMs ?? CREDIT_IDLE_MS;
    this.#fencing = Array.from({ length: slots }, () => 0);
    this.#sessions = Array.from({ length: slots }, () => null);
    this.#strategies = Array.from({ length: slots }, () => undefined);
    this.#running = Array.from({ length: slots }, () => null);
    this.#runningToken = Array.from({ length: slots }, () => 0);
  }

  /**
   * Admits a leased request on `slot`: refuses a token older than the slot's newest, and stops a
   * generation still running there under an older token (its lease was reclaimed) with the `stop`
   * it was admitted with. `done` says the new generation left the slot.
   */
  admit(slot: number, token: number, stop: Stop): { done: () => void } {
    const newest = this.#fencing[slot];
    if (newest === undefined) throw new BusError("bad_request", `Slot ${slot} does not exist on this worker`, { param: "lease.slot" });
    if (token < newest) {
      throw new BusError("conflict", `Cannot lease slot "${slot}": fencing token ${token} is older than ${newest}`);
    }
    if (token <= (this.#ended[slot] ?? 0)) {
      throw new BusError("conflict", `Cannot lease slot "${slot}": the lease with fencing token ${token} has ended`);
    }
    // A credit used again (same token) stops idling; one taken over by a newer lease has ended.
    const held = this.#held[slot];
    if (held !== null && held !== undefined) {
      clearTimeout(held.timer);
      this.#held[slot] = null;
      if (held.token < token) this.#ended[slot] = Math.max(this.#ended[slot] ?? 0, held.token);
    }
    this.#running[slot]?.(new BusError("cancelled", `Slot ${slot} was taken over by fencing token ${token}`));
    this.#fencing[slot] = token;
    // A function of its own, so that `done` of this admission cannot clear a later one's.
    const running: Stop = (reason) => stop(reason);
    this.#running[slot] = running;
    this.#runningToken[slot] = token;
    return {
      done: () => {
        if (this.#running[slot] === running) this.#running[slot] = null;
      },
    };
  }

  /**
   * A leased generation on `slot` ended: keep its lease as a slot credit when `keep` (the holder
   * asked, and the lease was neither revoked nor taken over meanwhile), else give it back now
   * with `release`. A kept credit is given back by `release` once idle for the credit idle time.
   * Returns whether the lease is kept.
   */
  settle(slot: number, token: number, keep: boolean, release: () => void): boolean {
    if (keep && this.#fencing[slot] === token && (this.#revoked[slot] ?? 0) < token && this.#held[slot] === null) {
      const timer = setTimeout(() => this.#giveBack(slot, token), this.#idleMs);
      timer.unref?.();
      this.#held[slot] = { token, timer, release };
      return true;
    }
    this.#ended[slot] = Math.max(this.#ended[slot] ?? 0, token);
    release();
    return false;
  }

  /** The scheduler revoked the credit at `token` on `slot`: given back now if idle, else at its generation's end. */
  revoke(slot: number, token: number): boolean {
    if (slot >= this.#revoked.length) return false;
    this.#revoked[slot] = Math.max(this.#revoked[slot] ?? 0, token);
    return this.#giveBack(slot, token);
  }

  /** Gives back every idle credit (the worker drains or stops); returns how many. */
  giveBackAll(): number {
    let n = 0;
    this.#held.forEach((h, slot) => {
      if (h !== null && this.#giveBack(slot, h.token)) n += 1;
    });
    return n;
  }

  /** Whether `slot` idles under a credit kept for its holder. */
  held(slot: number): boolean {
    return (this.#held[slot] ?? null) !== null;
  }

  #giveBack(slot: number, token: number): boolean {
    const h = this.#held[slot];
    if (h === null || h === undefined || h.token > token) return false;
    clearTimeout(h.timer);
    this.#held[slot] = null;
    this.#ended[slot] = Math.max(this.#ended[slot] ?? 0, h.token);
    h.release();
    return true;
  }

  /** The scheduler reclaimed a lease: abort what runs on `slot` under `token` or older. */
  abort(slot: number, token: number): boolean {
    this.#giveBack(slot, token); // an idle credit at that token has ended too
    const running = this.#running[slot];
    if (running === null || running === undefined || (this.#runningToken[slot] ?? 0) > token) return false;
    running(new BusError("cancelled", `Lease on slot ${slot} expired (fencing token ${token})`));
    return true;
  }

  /** The scheduler gave the slot to another session: forget which session it held. */
  clear(slot: number, session: string): void {
    if (this.#sessions[slot] === session) this.#sessions[slot] = null;
  }

  /**
   * Records which session a slot holds now. A session has one home on a worker: a slot that held
   * an older state of it (the session ran elsewhere since, e.g. under a slot credit) forgets it,
   * so neither a heartbeat nor an L2 snapshot ever speaks for that older state.
   */
  setSession(slot: number, session: string | null, strategy?: CacheStrategy): void {
    if (slot >= this.#sessions.length) return;
    if (session !== null) for (let i = 0; i < this.#sessions.length; i++) if (this.#sessions[i] === session) this.#sessions[i] = null;
    this.#sessions[slot] = session;
    this.#strategies[slot] = strategy;
  }

  /** The eviction strategy the session a slot holds last named, if any. */
  strategy(slot: number): CacheStrategy | undefined {
    return this.#strategies[slot];
  }

  /** The session a slot holds. */
  session(slot: number): string | null {
    return this.#sessions[slot] ?? null;
  }

  /**
   * Whether a leased generation is admitted on `slot` and not done. Heartbeats report such a
   * slot busy even before the engine has started on it, so the scheduler never reads "idle at
   * this token" while the lease's generation is still to run.
   */
  running(slot: number): boolean {
    return (this.#running[slot] ?? null) !== null;
  }

  /** The newest fencing token seen for a slot. */
  fencing(slot: number): number {
    return this.#fencing[slot] ?? 0;
  }
}

/** What a heartbeat needs from the worker. */
export interface HeartbeatSource {
  workerId: string;
  model: string;
  fingerprint: string;
  ctxSize: number;
  slots(): { slot: number; busy: boolean; tokens: number }[];
  guard: SlotGuard;
  l2(): Heartbeat["l2"];
  draining(): boolean;
}

/**
 * Publishes a heartbeat now and every `intervalMs`; returns a stop function, which publishes one
 * last heartbeat when asked (a stopping worker says it is draining, so the scheduler stops
 * leasing its slots at once instead of after three missed beats).
 */
export function startHeartbeat(bus: Bus, source: HeartbeatSource, intervalMs: number): (last?: { beat: boolean }) => void {
  const beat = () => {
    bus.publish(
      WorkerHeartbeat,
      {
        worker_id: source.workerId,
        model: source.model,
        fingerprint: source.fingerprint,
        ctx_size: source.ctxSize,
        slots: source.slots().map((s) => ({
          slot: s.slot,
          busy: s.busy || source.guard.running(s.slot),
          held: source.guard.held(s.slot),
          tokens: s.tokens,
          session: source.guard.session(s.slot),
          fencing_token: source.guard.fencing(s.slot),
        })),
        l2: source.l2(),
        draining: source.draining(),
        interval_ms: intervalMs,
        sent_at: Date.now(),
      },
      { workerId: source.workerId },
    );
  };
  beat();
  const timer = setInterval(beat, intervalMs);
  return (last) => {
    clearInterval(timer);
    if (last?.beat === true) beat();
  };
}
