/**
 * The api's global rate limits held across its instances (docs/adr/0017-cluster-rate-limits.md).
 *
 * One token bucket per limit (`ATLAS_RATE_LIMIT_RPM`, `ATLAS_RATE_LIMIT_TPM`) lives in JetStream KV
 * (`shared_limits_store.ts`). An instance does not ask it for every request: it leases a *batch*
 * of permits and spends them locally, synchronously, as the per-instance {@link TokenBucket} did.
 * A batch is twice the running average of the requests' sizes, from 1 % of the limit (at least
 * one permit) to 5 %: a request limit's stays at 1 % (every request is one permit), a token
 * limit's grows with its reservations (prompt + `max_tokens`), which are often more than 1 %.
 * When its permits fall under the low-water mark (half a batch, or the average request when the
 * batch is at its cap; never more than a batch) it leases the next batch in the background, so
 * a steady stream of requests never waits for the bus; a request waits for a KV exchange (a read,
 * then a revision-checked write: two round trips) only when the instance holds too few (its first
 * request, one larger than what it holds, after a quiet spell longer than the lease, or when the
 * cluster bucket was empty). Permits not spent within the lease time (`leaseMs`, 30 s) are given
 * back; a clean shutdown gives back all it holds. A debt (usage beyond reservations) is paid from
 * later leases, at most a bucket's worth at a time, as the cluster bucket refills.
 *
 * Bounded error: permits are taken from the cluster bucket with revision checks, so no two
 * instances spend the same permit; what the cluster admits in any interval is at most what the
 * bucket held at its start plus its refill, plus what the instances held then: under the
 * low-water mark plus one batch each, so under 1.5 batches of 1 % for requests and under
 * 2 batches of at most 5 % for tokens. With N instances the overshoot over one bucket is under
 * N × 1.5 % of a request limit and N × 10 % of a token limit; an instance that dies loses what it
 * held (fewer are admitted, not more). A withdrawal that answers after its timeout gives what it
 * got back to the cluster bucket.
 *
 * Fail mode: when the KV store does not answer within `timeoutMs`, the instance falls back to its
 * own bucket with the full limit (as before this change: N instances admit up to N × the limit)
 * and tries the store again in the background every `retryMs`. An outage of the limits' store
 * is not an outage of the api.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import type { Config } from "@atlas/config";
import type { RateLimitScope } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { type SharedPermits, TokenBucket } from "./limits.ts";
import { type BucketSpec, KvPermitSource, type PermitSource, type Withdrawal } from "./shared_limits_store.ts";

/** The share of a limit one batch holds at least. */
export const BATCH_FRACTION = 0.01;
/** The share of a limit one batch holds at most (a batch is twice the average request in between). */
export const MAX_BATCH_FRACTION = 0.05;
/** The weight of the latest request in the running average of the requests' sizes. */
const AVERAGE_WEIGHT = 0.1;
/** How often an instance asks an empty cluster bucket again, at most (ms). */
const MIN_POLL_MS = 50;

/** Options for {@link SharedBucket}. */
export interface SharedBucketOptions {
  scope: RateLimitScope;
  /** The limit per minute (the bucket holds one minute's worth). */
  perMinute: number;
  source: PermitSource;
  /** Permits leased at once at least; default 1 % of the limit, at least 1. */
  batch?: number;
  /** Permits leased at once at most; default 5 % of the limit, at least `batch`. */
  maxBatch?: number;
  /** Unspent permits go back this long after they were leased (ms); default 30 000. */
  leaseMs?: number;
  /** How long a request waits for the store before the local fallback is used (ms); default 500. */
  timeoutMs?: number;
  /** How long the fallback lasts before the store is tried again (ms); default 5000. */
  retryMs?: number;
  now?: () => number;
  log?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/** One limit shared by the api instances: permits leased in batches from the cluster bucket. */
export class SharedBucket implements SharedPermits {
  readonly capacity: number;
  /** The smallest and the largest batch. */
  readonly minBatch: number;
  readonly maxBatch: number;
  readonly #scope: RateLimitScope;
  readonly #spec: BucketSpec;
  readonly #source: PermitSource;
  readonly #leaseMs: number;
  readonly #timeoutMs: number;
  readonly #retryMs: number;
  readonly #now: () => number;
  readonly #log: SharedBucketOptions["log"];
  /** The fallback: this instance alone, with the full limit. */
  readonly #local: TokenBucket;
  /** Permits held (negative: usage beyond reservations, paid from the next leases). */
  #held = 0;
  /** The running average of the requests' sizes (0 before the first). */
  #average = 0;
  #heldUntil = 0;
  #fetching: Promise<void> | undefined;
  /** Withdrawals answered after their timeout, whose permits are being given back. */
  readonly #late = new Set<Promise<void>>();
  /** The cluster bucket had too few permits: none are asked for before this time. */
  #emptyUntil = 0;
  #emptyWaitMs = 0;
  /** …for a need of this many or more (a smaller one may still be there). */
  #emptyNeed = 0;
  /** The store failed (0: it answers): the fallback is used, and the store is asked again from this time on. */
  #fallbackUntil = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(options: SharedBucketOptions) {
    this.#scope = options.scope;
    this.capacity = options.perMinute;
    this.#spec = { capacity: options.perMinute, perMinute: options.perMinute };
    this.#source = options.source;
    this.minBatch = Math.max(1, Math.floor(options.batch ?? options.perMinute * BATCH_FRACTION));
    this.maxBatch = Math.max(this.minBatch, Math.floor(options.maxBatch ?? options.perMinute * MAX_BATCH_FRACTION));
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#timeoutMs = options.timeoutMs ?? 500;
    this.#retryMs = options.retryMs ?? 5000;
    this.#now = options.now ?? Date.now;
    this.#log = options.log;
    this.#local = new TokenBucket(options.perMinute, options.perMinute, this.#now());
    this.#timer = setInterval(() => this.#expire(this.#now()), this.#leaseMs);
    this.#timer.unref();
  }

  /** True while the store failed and this instance limits alone. */
  get fallback(): boolean {
    return this.#fallbackUntil > 0;
  }

  /** Permits this instance holds now. */
  get held(): number {
    return this.#held;
  }

  /** Permits leased at once now: twice the average request, from {@link minBatch} to {@link maxBatch}. */
  get batch(): number {
    return Math.min(this.maxBatch, Math.max(this.minBatch, Math.ceil(2 * this.#average)));
  }

  /** Resolves once no exchange with the store is in flight (what is held is settled). */
  async idle(): Promise<void> {
    while (this.#fetching !== undefined || this.#late.size > 0) await Promise.all([this.#fetching, ...this.#late]);
  }

  /** Takes `n` (clamped to the capacity): 0 when taken, else the ms until it could be; a promise only when the store must be asked first. */
  take(n: number): number | Promise<number> {
    const want = Math.min(n, this.capacity);
    this.#average = this.#average === 0 ? want : this.#average + (want - this.#average) * AVERAGE_WEIGHT;
    const now = this.#now();
    if (this.#fallbackUntil > 0) {
      // The store failed: limit alone, and ask it again in the background once the fallback ran out.
      if (now >= this.#fallbackUntil && this.#fetching === undefined) this.#startFetch(1, this.batch);
      if (this.#held < want) return this.#takeLocal(want, now);
    }
    if (this.#held >= want) return this.#spend(want, now);
    if (this.#empty(want, now)) return Math.max(1, this.#emptyUntil - now);
    return this.#acquire(want);
  }

  /** Gives back `n` unused permits (a reservation settled below its size). */
  give(n: number): void {
    if (this.fallback) this.#local.give(n, this.#now());
    else this.#held += n;
  }

  /** Takes `n` more even into debt (usage beyond a reservation). */
  force(n: number): void {
    if (this.fallback) this.#local.force(n, this.#now());
    else this.#held -= n;
  }

  /** Stops the lease timer and gives the unspent permits back (waiting at most the store timeout: a shutdown is not held up). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    const giveBack = async () => {
      await this.idle();
      const n = this.#held;
      this.#held = 0;
      if (n > 0) await this.#source.deposit(this.#scope, this.#spec, n, this.#now());
    };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((done) => {
      timer = setTimeout(done, this.#timeoutMs);
    });
    await Promise.race([giveBack().catch(() => {}), timeout]);
    clearTimeout(timer);
  }

  #spend(n: number, now: number): number {
    this.#held -= n;
    // Lease the next batch ahead of need, off the request path: under half a batch, or under the
    // average request when the batch is at its cap (so that the next one is likely there).
    const batch = this.batch;
    const low = this.#held < Math.min(batch, Math.max(Math.ceil(batch / 2), Math.ceil(this.#average)));
    if (low && this.#fetching === undefined && now >= this.#emptyUntil && this.#fallbackUntil === 0) {
      this.#startFetch(1, this.batch);
    }
    return 0;
  }

  /** Whether the cluster bucket was found without `n` more than this instance holds, too recently to ask again. */
  #empty(n: number, now: number): boolean {
    return now < this.#emptyUntil && n - this.#held >= this.#emptyNeed;
  }

  #takeLocal(n: number, now: number): number {
    return this.#local.take(n, now) ? 0 : Math.max(1, this.#local.waitMs(n, now));
  }

  async #acquire(n: number): Promise<number> {
    for (let round = 0; round < 3; round++) {
      if (this.#fetching === undefined) {
        // What is missing, but never more than the cluster bucket holds: a debt beyond it is paid
        // over several leases as the bucket refills, not waited for at once (that would never come).
        const need = Math.min(n - this.#held, this.capacity);
        this.#startFetch(need, need + this.batch);
      }
      await this.#fetching;
      const now = this.#now();
      if (this.#fallbackUntil > 0 && this.#held < n) return this.#takeLocal(n, now);
      if (this.#held >= n) return this.#spend(n, now);
      if (this.#empty(n, now)) return Math.max(1, this.#emptyWaitMs, this.#emptyUntil - now);
    }
    return 1000; // others kept taking what was leased for this request: try again in a second
  }

  #startFetch(min: number, max: number): void {
    this.#track(this.#fetch(min, max));
  }

  /** One exchange with the store at a time: `#fetching` until it is done. */
  #track(exchange: Promise<void>): void {
    const tracked = exchange.finally(() => {
      if (this.#fetching === tracked) this.#fetching = undefined;
    });
    this.#fetching = tracked;
  }

  /** Leases from `min` to `max` permits; on no answer within the timeout, switches to the fallback. */
  async #fetch(min: number, max: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let late = false;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        late = true;
        reject(new Error(`no answer within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
    });
    const withdrawal = this.#source.withdraw(this.#scope, this.#spec, min, max, this.#now());
    try {
      const w = await Promise.race([withdrawal, timeout]);
      const now = this.#now();
      if (this.#fallbackUntil > 0) {
        this.#fallbackUntil = 0;
        this.#log?.info({ scope: this.#scope }, "The shared rate-limit store answers again: limits hold across api instances");
      }
      if (w.got > 0) {
        this.#held += w.got;
        this.#heldUntil = now + this.#leaseMs;
      } else {
        this.#emptyWaitMs = w.waitMs;
        this.#emptyNeed = min;
        this.#emptyUntil = now + Math.max(MIN_POLL_MS, w.waitMs);
      }
    } catch (err) {
      if (late) this.#giveBackLate(withdrawal);
      if (this.#fallbackUntil === 0) {
        this.#log?.warn(
          { scope: this.#scope, err: err instanceof Error ? err.message : String(err) },
          "The shared rate-limit store does not answer: this api instance limits alone (the full limit) until it does",
        );
      }
      this.#fallbackUntil = this.#now() + this.#retryMs;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A withdrawal answered after its timeout took its permits all the same: they go back to the cluster bucket. */
  #giveBackLate(withdrawal: Promise<Withdrawal>): void {
    const back = withdrawal
      .then((w) => this.#source.deposit(this.#scope, this.#spec, w.got, this.#now()))
      .catch(() => {})
      .finally(() => this.#late.delete(back));
    this.#late.add(back);
  }

  /** Gives back permits held past their lease (another instance may need them); in the fallback, tries the store again. */
  #expire(now: number): void {
    if (this.#fetching !== undefined) return;
    if (this.#fallbackUntil > 0) {
      if (now >= this.#fallbackUntil) this.#startFetch(1, this.batch);
      return;
    }
    if (this.#held <= 0 || now < this.#heldUntil) return;
    const n = this.#held;
    this.#held = 0;
    this.#track(this.#source.deposit(this.#scope, this.#spec, n, now).catch(() => {}));
  }
}

/** The shared global limits of an api instance, when any is on. */
export interface ClusterLimits {
  requests?: SharedBucket;
  tokens?: SharedBucket;
  close(): Promise<void>;
}

/** The api's shared global limits over its bus (undefined when `ATLAS_RATE_LIMIT_RPM` and `_TPM` are off). */
export function clusterLimits(deps: { bus: Bus; config: Config; log: Logger }): ClusterLimits | undefined {
  const { config, bus, log } = deps;
  if (config.ATLAS_RATE_LIMIT_RPM <= 0 && config.ATLAS_RATE_LIMIT_TPM <= 0) return undefined;
  const source = new KvPermitSource(bus.jetstream, config.ATLAS_NATS_PREFIX);
  // Create or bind the bucket now, so the first request's lease is one KV exchange, a read and a
  // write (its failure is retried on that first use).
  void source.open().catch(() => {});
  const make = (scope: RateLimitScope, perMinute: number) =>
    perMinute > 0 ? new SharedBucket({ scope, perMinute, source, log }) : undefined;
  const requests = make("global_requests", config.ATLAS_RATE_LIMIT_RPM);
  const tokens = make("global_tokens", config.ATLAS_RATE_LIMIT_TPM);
  return {
    ...(requests === undefined ? {} : { requests }),
    ...(tokens === undefined ? {} : { tokens }),
    close: async () => {
      await Promise.all([requests?.close(), tokens?.close()]);
    },
  };
}
