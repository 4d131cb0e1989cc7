/**
 * Limits of the api (docs/security.md):
 *
 * - {@link TokenBucket}: the one rate-limiting primitive — a bucket of `capacity` that refills
 *   at a steady rate; a request takes from it or is told how long until it could.
 * - {@link RateLimiter}: requests and tokens per minute, globally and per session (the
 *   `atlas.session_id` within a tenant; a request without a session counts for its tenant).
 *   Buckets hold one minute's worth, so a quiet client may burst. Tokens are reserved before
 *   generation (prompt estimate + `max_tokens` × choices) and settled to the real usage after a
 *   successful answer; a failed or abandoned one keeps its reservation.
 *   With {@link RateLimits.shared} the global limits are held across the api instances
 *   (`shared_limits.ts`, docs/adr/0017-cluster-rate-limits.md); the per-session ones stay per
 *   instance.
 * - {@link Admission}: at most `ATLAS_MAX_CONCURRENT` generation requests at once; more wait in
 *   a bounded FIFO queue for at most `ATLAS_ADMISSION_WAIT_MS`, then get a 503.
 *
 * @module
 */

/** What a refused request is told. */
export interface Refusal {
  scope: "global" | "session";
  kind: "requests" | "tokens";
  /** Seconds until the request could pass (for `Retry-After`). */
  retryAfterS: number;
  limitPerMinute: number;
}

/** A refill-on-read token bucket. */
export class TokenBucket {
  readonly capacity: number;
  readonly perMs: number;
  #level: number;
  #at: number;

  constructor(capacity: number, refillPerMinute: number, now: number) {
    this.capacity = capacity;
    this.perMs = refillPerMinute / 60_000;
    this.#level = capacity;
    this.#at = now;
  }

  /** The level at `now` (may be negative after {@link force}). */
  level(now: number): number {
    if (now > this.#at) {
      this.#level = Math.min(this.capacity, this.#level + (now - this.#at) * this.perMs);
      this.#at = now;
    }
    return this.#level;
  }

  /** ms until `n` could be taken (0: now). A request larger than the bucket needs a full one. */
  waitMs(n: number, now: number): number {
    const need = Math.min(n, this.capacity) - this.level(now);
    return need <= 0 ? 0 : need / this.perMs;
  }

  /** Takes `n` (clamped to the capacity) if available. */
  take(n: number, now: number): boolean {
    if (this.waitMs(n, now) > 0) return false;
    this.#level -= Math.min(n, this.capacity);
    return true;
  }

  /** Takes `n` even into debt (usage beyond a reservation). */
  force(n: number, now: number): void {
    this.level(now);
    this.#level -= n;
  }

  /** Gives back `n` (up to the capacity). */
  give(n: number, now: number): void {
    this.#level = Math.min(this.capacity, this.level(now) + n);
  }

  /** True when it is full again (a per-session bucket that can be dropped). */
  full(now: number): boolean {
    return this.level(now) >= this.capacity;
  }
}

/**
 * A global limit shared with the other api instances (`SharedBucket` in `shared_limits.ts`):
 * `take` answers 0 when taken, else the ms until it could be, and is a promise only when the
 * shared store must be asked first.
 */
export interface SharedPermits {
  readonly capacity: number;
  take(n: number): number | Promise<number>;
  give(n: number): void;
  force(n: number): void;
}

/** Options for {@link RateLimiter}; a limit of 0 is off. */
export interface RateLimits {
  rpm: number;
  tpm: number;
  sessionRpm: number;
  sessionTpm: number;
  /** The clock (ms); default `Date.now`. */
  now?: () => number;
  /** Per-session buckets kept at most; full ones are dropped first. Default 100 000. */
  maxSessions?: number;
  /** The global limits held across api instances; each replaces this instance's own global bucket. */
  shared?: { requests?: SharedPermits; tokens?: SharedPermits };
}

/** A token reservation; {@link settle} once with the real usage. */
export interface Reservation {
  readonly tokens: number;
  /** Replaces the reservation by the real usage (refund or debt). */
  settle(actual: number): void;
}

/** Requests and tokens per minute, globally and per session. */
export class RateLimiter {
  readonly limits: Readonly<RateLimits>;
  readonly #now: () => number;
  readonly #maxSessions: number;
  readonly #globalRequests: TokenBucket | undefined;
  readonly #globalTokens: TokenBucket | undefined;
  readonly #sessionRequests = new Map<string, TokenBucket>();
  readonly #sessionTokens = new Map<string, TokenBucket>();

  constructor(limits: RateLimits) {
    this.limits = limits;
    this.#now = limits.now ?? Date.now;
    this.#maxSessions = limits.maxSessions ?? 100_000;
    const t = this.#now();
    this.#globalRequests = limits.rpm > 0 && limits.shared?.requests === undefined ? new TokenBucket(limits.rpm, limits.rpm, t) : undefined;
    this.#globalTokens = limits.tpm > 0 && limits.shared?.tokens === undefined ? new TokenBucket(limits.tpm, limits.tpm, t) : undefined;
  }

  /** True when any limit is on. */
  get enabled(): boolean {
    const l = this.limits;
    return l.rpm > 0 || l.tpm > 0 || l.sessionRpm > 0 || l.sessionTpm > 0;
  }

  /**
   * Counts one request of `session`; the refusal when a bucket is empty (nothing is taken then).
   * A promise only when the shared global limit must ask its store first.
   */
  request(session: string): Refusal | undefined | Promise<Refusal | undefined> {
    const now = this.#now();
    const buckets: [TokenBucket | undefined, Refusal["scope"], number][] = [
      [this.#globalRequests, "global", this.limits.rpm],
      [this.#bucket(this.#sessionRequests, session, this.limits.sessionRpm, now), "session", this.limits.sessionRpm],
    ];
    const refused = this.#takeAll(buckets, 1, "requests", now);
    const shared = this.limits.shared?.requests;
    if (refused !== undefined || shared === undefined) return refused;
    return this.#takeShared(shared, 1, "requests", this.limits.rpm, () => buckets[1]?.[0]?.give(1, this.#now()));
  }

  /** Reserves `tokens` for `session`, or the refusal; a promise only when the shared global limit must ask its store first. */
  reserve(session: string, tokens: number): Reservation | Refusal | Promise<Reservation | Refusal> {
    const now = this.#now();
    const global = this.#globalTokens;
    const own = this.#bucket(this.#sessionTokens, session, this.limits.sessionTpm, now);
    const refused = this.#takeAll(
      [
        [global, "global", this.limits.tpm],
        [own, "session", this.limits.sessionTpm],
      ],
      tokens,
      "tokens",
      now,
    );
    if (refused !== undefined) return refused;
    const reservation = (): Reservation => this.#reservation(tokens, global, own);
    const shared = this.limits.shared?.tokens;
    if (shared === undefined) return reservation();
    const r = this.#takeShared(shared, tokens, "tokens", this.limits.tpm, () => own?.give(Math.min(tokens, own.capacity), this.#now()));
    return r instanceof Promise ? r.then((x) => x ?? reservation()) : (r ?? reservation());
  }

  #reservation(tokens: number, global: TokenBucket | undefined, own: TokenBucket | undefined): Reservation {
    const shared = this.limits.shared?.tokens;
    let settled = false;
    return {
      tokens,
      settle: (actual) => {
        if (settled) return;
        settled = true;
        const t = this.#now();
        for (const b of [global, own]) {
          if (b === undefined) continue;
          const taken = Math.min(tokens, b.capacity);
          if (actual < taken) b.give(taken - actual, t);
          else b.force(actual - taken, t);
        }
        if (shared !== undefined) {
          const taken = Math.min(tokens, shared.capacity);
          if (actual < taken) shared.give(taken - actual);
          else shared.force(actual - taken);
        }
      },
    };
  }

  /** Takes `n` from a shared global limit after the local buckets passed; on refusal `undo` gives theirs back. */
  #takeShared(
    shared: SharedPermits,
    n: number,
    kind: Refusal["kind"],
    limit: number,
    undo: () => void,
  ): Refusal | undefined | Promise<Refusal | undefined> {
    const done = (waitMs: number): Refusal | undefined => {
      if (waitMs <= 0) return undefined;
      undo();
      return { scope: "global", kind, retryAfterS: Math.max(1, Math.ceil(waitMs / 1000)), limitPerMinute: limit };
    };
    const r = shared.take(n);
    return typeof r === "number" ? done(r) : r.then(done);
  }

  /** Buckets tracked per session (for status). */
  get sessions(): number {
    return Math.max(this.#sessionRequests.size, this.#sessionTokens.size);
  }

  #takeAll(buckets: [TokenBucket | undefined, Refusal["scope"], number][], n: number, kind: Refusal["kind"], now: number) {
    let worst: Refusal | undefined;
    for (const [b, scope, limit] of buckets) {
      if (b === undefined) continue;
      const wait = b.waitMs(n, now);
      if (wait > 0 && (worst === undefined || wait / 1000 > worst.retryAfterS)) {
        worst = { scope, kind, retryAfterS: wait / 1000, limitPerMinute: limit };
      }
    }
    if (worst !== undefined) return { ...worst, retryAfterS: Math.max(1, Math.ceil(worst.retryAfterS)) };
    for (const [b] of buckets) b?.take(n, now);
    return undefined;
  }

  #bucket(map: Map<string, TokenBucket>, key: string, perMinute: number, now: number): TokenBucket | undefined {
    if (perMinute <= 0) return undefined;
    let b = map.get(key);
    if (b === undefined) {
      if (map.size >= this.#maxSessions) this.#sweep(map, now);
      b = new TokenBucket(perMinute, perMinute, now);
      map.set(key, b);
    }
    return b;
  }

  /** Drops buckets that refilled completely (they hold no state); the oldest others if still too many. */
  #sweep(map: Map<string, TokenBucket>, now: number): void {
    for (const [k, b] of map) if (b.full(now)) map.delete(k);
    for (const k of map.keys()) {
      if (map.size < this.#maxSessions) break;
      map.delete(k);
    }
  }
}

/** Why admission refused a request. */
export type AdmissionRefusal = "queue_full" | "timeout";

/** Options for {@link Admission}. */
export interface AdmissionOptions {
  /** Requests admitted at once (`ATLAS_MAX_CONCURRENT`). */
  max: number;
  /** Requests that may wait (`ATLAS_ADMISSION_QUEUE`). */
  queue: number;
  /** How long one may wait, in ms (`ATLAS_ADMISSION_WAIT_MS`). */
  waitMs: number;
}

/** Raised when admission refuses a request. */
export class AdmissionError extends Error {
  override readonly name = "AdmissionError";
  readonly reason: AdmissionRefusal;

  constructor(reason: AdmissionRefusal) {
    super(reason === "queue_full" ? "The admission queue is full" : "No place was free within the admission wait");
    this.reason = reason;
  }
}

interface Waiter {
  resolve: (release: () => void) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

/** A concurrency limit with a bounded FIFO queue. */
export class Admission {
  readonly options: Readonly<AdmissionOptions>;
  #running = 0;
  readonly #waiting: Waiter[] = [];
  /** Refusals since start, by reason. */
  readonly refused: Record<AdmissionRefusal, number> = { queue_full: 0, timeout: 0 };

  constructor(options: AdmissionOptions) {
    this.options = { ...options, max: Math.max(1, options.max) };
  }

  /** Requests running now. */
  get running(): number {
    return this.#running;
  }

  /** Requests waiting now. */
  get queued(): number {
    return this.#waiting.length;
  }

  /**
   * Resolves with the release function once admitted; rejects with {@link AdmissionError} when
   * the queue is full or the wait ran out, or with the signal's reason when it aborts first.
   */
  enter(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.#running < this.options.max && this.#waiting.length === 0) return Promise.resolve(this.#admit());
    if (this.#waiting.length >= this.options.queue || this.options.waitMs === 0) {
      this.refused.queue_full += 1;
      return Promise.reject(new AdmissionError("queue_full"));
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        signal,
        timer: setTimeout(() => {
          this.#remove(w);
          this.refused.timeout += 1;
          reject(new AdmissionError("timeout"));
        }, this.options.waitMs),
        onAbort: () => {
          this.#remove(w);
          reject(signal?.reason);
        },
      };
      signal?.addEventListener("abort", w.onAbort, { once: true });
      this.#waiting.push(w);
    });
  }

  #admit(): () => void {
    this.#running += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#running -= 1;
      this.#next();
    };
  }

  #next(): void {
    while (this.#running < this.options.max) {
      const w = this.#waiting.shift();
      if (w === undefined) return;
      this.#cleanup(w);
      w.resolve(this.#admit());
    }
  }

  #remove(w: Waiter): void {
    const i = this.#waiting.indexOf(w);
    if (i !== -1) this.#waiting.splice(i, 1);
    this.#cleanup(w);
  }

  #cleanup(w: Waiter): void {
    clearTimeout(w.timer);
    w.signal?.removeEventListener("abort", w.onAbort);
  }
}
