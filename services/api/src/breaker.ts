/**
 * Circuit breakers on the api's downstream services (scheduler, persistence, metrics, each
 * worker). A breaker counts consecutive failures of *reaching* a service — no answer
 * (`unavailable`) or no answer in time (`timeout`) raised locally by the bus; an error the
 * service itself answered with is a sign of life, not a failure. After `failureThreshold` of
 * them it opens: callers skip the service and take their fallback at once (ARCHITECTURE §3)
 * instead of each paying a timeout. After `openMs` it is half-open: one trial — the breaker's
 * own probe, or the next real call — decides; success closes it, failure opens it again for
 * twice as long (at most `maxOpenMs`). A breaker with a probe also probes when a call is refused
 * (at most every `probeGapMs`), so under traffic a service that came back is noticed within a
 * fraction of a second, not only at the end of the open period.
 *
 * Only fresh evidence counts: a failure of a call that began before the service's newest answer,
 * or before the breaker last changed state, is ignored. Calls sent just before an outage time out
 * seconds later, often after the service is back and the breaker closed again; counting them then
 * would open it on a service that answers (and refuse memory writes for a whole open period).
 *
 * Why a small class and not `opossum`: see docs/adr/0007-hardening.md.
 *
 * @module
 */
import { BusError } from "@atlas/bus";

/** The three states of a breaker. */
export const BreakerState = { closed: "closed", open: "open", halfOpen: "half_open" } as const;
/** One of the three states of a breaker. */
export type BreakerState = (typeof BreakerState)[keyof typeof BreakerState];

/** Options for {@link CircuitBreaker}. */
export interface CircuitBreakerOptions {
  /** What it guards: `scheduler`, `persistence`, `metrics`, `worker:<id>`. */
  name: string;
  /** Consecutive failures that open it; default 3. */
  failureThreshold?: number;
  /** First open period, in ms; default 2000. */
  openMs?: number;
  /** Longest open period after repeated failed trials, in ms; default 4 × `openMs`. */
  maxOpenMs?: number;
  /** Shortest time between two probes started by refused calls, in ms; default 250. */
  probeGapMs?: number;
  /**
   * Checks the service when the breaker turns half-open, so it closes again without waiting for
   * client traffic. Resolves when the service is back; rejects otherwise.
   */
  probe?: () => Promise<unknown>;
  /** Called on every state change. */
  onChange?: (name: string, from: BreakerState, to: BreakerState) => void;
  /** The clock (ms); default `Date.now`. */
  now?: () => number;
}

/** One admitted call through a breaker: report how it went exactly once. */
export interface BreakerAttempt {
  /** The service answered (even with an error of its own). */
  success(): void;
  /** The service could not be reached or did not answer in time (stale, and ignored, once it answered a later call). */
  failure(): void;
  /** Tells nothing about the service (the caller cancelled): frees a half-open trial. */
  release(): void;
}

/** A breaker's state as status and metrics show it. */
export interface BreakerSnapshot {
  name: string;
  state: BreakerState;
  /** Consecutive failures counted while closed. */
  failures: number;
  /** How many times it opened since the api started. */
  opened: number;
  /** When it last changed state (ISO time), or null. */
  since: string | null;
  /** ms until a half-open trial, while open. */
  retry_in_ms: number;
}

/** Thrown by {@link CircuitBreaker.run} while the breaker refuses calls. */
export class CircuitOpenError extends Error {
  override readonly name = "CircuitOpenError";
  readonly breaker: string;
  readonly retryAfterMs: number;

  constructor(breaker: string, retryAfterMs: number) {
    super(`The circuit breaker of "${breaker}" is open; retry in ${Math.ceil(retryAfterMs)} ms`);
    this.breaker = breaker;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Whether an error means the service could not be reached (what a breaker counts). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof BusError && err.origin === "local" && (err.code === "unavailable" || err.code === "timeout");
}

/** A circuit breaker (see the module doc). */
export class CircuitBreaker {
  readonly name: string;
  readonly #threshold: number;
  readonly #baseOpenMs: number;
  readonly #maxOpenMs: number;
  readonly #probe: (() => Promise<unknown>) | undefined;
  readonly #onChange: CircuitBreakerOptions["onChange"];
  readonly #now: () => number;
  #state: BreakerState = BreakerState.closed;
  /** Moves on every answer and every state change: an attempt's failure counts only if it has not moved since the attempt began. */
  #evidence = 0;
  #failures = 0;
  #opened = 0;
  #openMs: number;
  #openUntil = 0;
  #since: number | null = null;
  #trial = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #probeGapMs: number;
  #probing = false;
  #lastProbe = Number.NEGATIVE_INFINITY;

  constructor(options: CircuitBreakerOptions) {
    this.name = options.name;
    this.#threshold = Math.max(1, options.failureThreshold ?? 3);
    this.#baseOpenMs = Math.max(1, options.openMs ?? 2000);
    this.#maxOpenMs = Math.max(this.#baseOpenMs, options.maxOpenMs ?? 4 * this.#baseOpenMs);
    this.#probeGapMs = options.probeGapMs ?? 250;
    this.#openMs = this.#baseOpenMs;
    this.#probe = options.probe;
    this.#onChange = options.onChange;
    this.#now = options.now ?? Date.now;
  }

  /** The current state (an open breaker whose period ran out reads as half-open). */
  get state(): BreakerState {
    if (this.#state === BreakerState.open && this.#now() >= this.#openUntil) this.#set(BreakerState.halfOpen);
    return this.#state;
  }

  /** ms until the breaker lets a trial through (0 unless open). */
  get retryAfterMs(): number {
    return this.state === BreakerState.open ? Math.max(0, this.#openUntil - this.#now()) : 0;
  }

  /** Admits a call, or undefined when the breaker refuses it (open, or half-open with its trial running). */
  attempt(): BreakerAttempt | undefined {
    const state = this.state;
    if (state === BreakerState.open) {
      this.#probeSoon();
      return undefined;
    }
    if (state === BreakerState.halfOpen) {
      if (this.#trial) return undefined;
      this.#trial = true;
      return this.#report(true);
    }
    return this.#report(false);
  }

  /** Runs `fn` through the breaker: refused with {@link CircuitOpenError}; `isFailure` says what counts. */
  async run<T>(fn: () => Promise<T>, isFailure: (err: unknown) => boolean = isUnreachable): Promise<T> {
    const a = this.attempt();
    if (a === undefined) throw new CircuitOpenError(this.name, this.retryAfterMs);
    try {
      const v = await fn();
      a.success();
      return v;
    } catch (err) {
      if (isFailure(err)) a.failure();
      else if (err instanceof BusError && err.code === "cancelled") a.release();
      else a.success();
      throw err;
    }
  }

  /** Records a success seen outside a call (a snapshot arrived from the service). */
  recordSuccess(): void {
    if (this.#state !== BreakerState.closed || this.#failures > 0) this.#succeeded();
    else this.#evidence += 1; // calls begun before it are stale all the same
  }

  /** The state for status and metrics. */
  snapshot(): BreakerSnapshot {
    const state = this.state;
    return {
      name: this.name,
      state,
      failures: this.#failures,
      opened: this.#opened,
      since: this.#since === null ? null : new Date(this.#since).toISOString(),
      retry_in_ms: this.retryAfterMs,
    };
  }

  /** Stops the probe timer. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  #report(trial: boolean): BreakerAttempt {
    const began = this.#evidence;
    let done = false;
    const once = (fn: () => void) => () => {
      if (done) return;
      done = true;
      if (trial) this.#trial = false;
      fn();
    };
    return {
      success: once(() => this.#succeeded()),
      failure: once(() => {
        if (began === this.#evidence) this.#failed(trial);
      }),
      release: once(() => {}),
    };
  }

  #succeeded(): void {
    this.#evidence += 1;
    this.#failures = 0;
    this.#openMs = this.#baseOpenMs;
    clearTimeout(this.#timer);
    if (this.#state !== BreakerState.closed) this.#set(BreakerState.closed);
  }

  #failed(trial: boolean): void {
    if (trial || this.#state === BreakerState.halfOpen) {
      this.#openMs = Math.min(this.#maxOpenMs, this.#openMs * 2);
      this.#open();
      return;
    }
    if (this.#state === BreakerState.open) return;
    this.#failures += 1;
    if (this.#failures >= this.#threshold) this.#open();
  }

  #open(): void {
    this.#openUntil = this.#now() + this.#openMs;
    this.#opened += 1;
    this.#set(BreakerState.open);
    this.#scheduleProbe();
  }

  /** A refused call: check the service now (rate-limited), so a recovery is noticed under traffic. */
  #probeSoon(): void {
    const probe = this.#probe;
    if (probe === undefined || this.#closed || this.#probing || this.#now() - this.#lastProbe < this.#probeGapMs) return;
    this.#probing = true;
    this.#lastProbe = this.#now();
    probe().then(
      () => {
        this.#probing = false;
        if (this.#state === BreakerState.open) this.#succeeded();
      },
      () => {
        this.#probing = false;
      },
    );
  }

  #scheduleProbe(): void {
    clearTimeout(this.#timer);
    if (this.#probe === undefined || this.#closed) return;
    const probe = this.#probe;
    this.#timer = setTimeout(
      () => {
        const a = this.attempt(); // half-open now: the probe is the trial (unless a real call took it)
        if (a === undefined) {
          if (this.#state === BreakerState.open) this.#scheduleProbe();
          return;
        }
        this.#lastProbe = this.#now();
        probe().then(
          () => a.success(),
          () => a.failure(),
        );
      },
      Math.max(0, this.#openUntil - this.#now()),
    );
    this.#timer.unref?.();
  }

  #set(to: BreakerState): void {
    const from = this.#state;
    if (from === to) return;
    this.#evidence += 1;
    this.#state = to;
    this.#since = this.#now();
    this.#onChange?.(this.name, from, to);
  }
}
