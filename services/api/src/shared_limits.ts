/**
 * The api's global rate limits held across its instances (docs/adr/0017-cluster-rate-limits.md).
 *
 * One token bucket per limit (`ATLAS_RATE_LIMIT_RPM`, `ATLAS_RATE_LIMIT_TPM`) lives in JetStream KV
 * (`shared_limits_store.ts`). An instance does not ask it for every request: it leases a *batch*
 * of permits (at most 1 % of the limit, at least one) and spends them locally, synchronously, as
 * the per-instance {@link TokenBucket} did. When its permits fall under half a batch it leases the
 * next batch in the background, so a steady stream of requests never waits for the bus; a request
 * waits for one round trip only when the instance holds too few (its first request, one larger
 * than what it holds, after a quiet spell longer than the lease, or when the cluster bucket was
 * empty). Permits not spent within the lease time (`leaseMs`, 30 s) are given back; a clean
 * shutdown gives back all it holds.
 *
 * Bounded error: permits are taken from the cluster bucket with revision checks, so no two
 * instances spend the same permit; what the cluster admits in any interval is at most what the
 * bucket held at its start plus its refill, plus what the instances held then (under 1.5
 * batches each, for requests). With N instances the overshoot over one bucket is under
 * N × 1.5 % of the limit; an instance that dies loses what it held (fewer are admitted, not more).
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
import { type BucketSpec, KvPermitSource, type PermitSource } from "./shared_limits_store.ts";

/** The share of a limit one batch holds at most. */
export const BATCH_FRACTION = 0.01;
/** How often an instance asks an empty cluster bucket again, at most (ms). */
const MIN_POLL_MS = 50;

/** Options for {@link SharedBucket}. */
export interface SharedBucketOptions {
  scope: RateLimitScope;
  /** The limit per minute (the bucket holds one minute's worth). */
  perMinute: number;
  source: PermitSource;
  /** Permits leased at once; default 1 % of the limit, at least 1. */
  batch?: number;
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
  readonly batch: number;
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
  /** Permits held (negative: usage beyond reservations, paid from the next batch). */
  #held = 0;
  #heldUntil = 0;
  #fetching: Promise<void> | undefined;
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
    this.batch = Math.max(1, Math.floor(options.batch ?? options.perMinute * BATCH_FRACTION));
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

  /** Takes `n` (clamped to the capacity): 0 when taken, else the ms until it could be; a promise only when the store must be asked first. */
  take(n: number): number | Promise<number> {
    const want = Math.min(n, this.capacity);
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
      await this.#fetching;
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
    // Lease the next batch ahead of need, off the request path.
    const low = this.#held < Math.ceil(this.batch / 2);
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
      if (this.#fetching === undefined) this.#startFetch(n - this.#held, n - this.#held + this.batch);
      await this.#fetching;
      const now = this.#now();
      if (this.#fallbackUntil > 0 && this.#held < n) return this.#takeLocal(n, now);
      if (this.#held >= n) return this.#spend(n, now);
      if (this.#empty(n, now)) return Math.max(1, this.#emptyWaitMs, this.#emptyUntil - now);
    }
    return 1000; // others kept taking what was leased for this request: try again in a second
  }

  #startFetch(min: number, max: number): void {
    const fetch = this.#fetch(min, max).finally(() => {
      if (this.#fetching === fetch) this.#fetching = undefined;
    });
    this.#fetching = fetch;
  }

  /** Leases from `min` to `max` permits; on no answer within the timeout, switches to the fallback. */
  async #fetch(min: number, max: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.#timeoutMs} ms`)), this.#timeoutMs);
    });
    try {
      const w = await Promise.race([this.#source.withdraw(this.#scope, this.#spec, min, max, this.#now()), timeout]);
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
    const give = this.#source.deposit(this.#scope, this.#spec, n, now).catch(() => {});
    this.#fetching = give.finally(() => {
      if (this.#fetching === give) this.#fetching = undefined;
    });
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
  // Create or bind the bucket now, so the first request's lease is one KV exchange (its failure is
  // retried on that first use).
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
