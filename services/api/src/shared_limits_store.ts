/**
 * The cluster token buckets of the api's shared rate limits, in JetStream KV
 * (`rateLimitBucket`, one key per scope, `libs/contracts/src/limits.ts`): a withdrawal reads a
 * bucket's state, refills it by the time elapsed, takes what it may and writes the rest back
 * with a revision check, so two instances never take the same permit; a conflict reads again.
 * A deposit gives unused permits back the same way. docs/adr/0017-cluster-rate-limits.md.
 *
 * @module
 */
import { type BusJetStream, isRevisionConflict, type KV } from "@atlas/bus";
import { type RateLimitScope, RateLimitState, rateLimitBucket, rateLimitKey } from "@atlas/contracts";

/** A limit's bucket: a minute's worth, refilled at the limit's rate. */
export interface BucketSpec {
  capacity: number;
  perMinute: number;
}

/** What a withdrawal got: `got` permits (0 or from `min` to `max`), else the ms until `min` could be had. */
export interface Withdrawal {
  got: number;
  waitMs: number;
}

/** Where the instances' permits come from (the KV store below; its interface for the leasing side). */
export interface PermitSource {
  /** Takes from `min` to `max` permits of a scope's bucket at once, or none when fewer than `min` are there. */
  withdraw(scope: RateLimitScope, spec: BucketSpec, min: number, max: number, now: number): Promise<Withdrawal>;
  /** Gives `n` unused permits back (up to the bucket's capacity). */
  deposit(scope: RateLimitScope, spec: BucketSpec, n: number, now: number): Promise<void>;
}

/** Revision conflicts one operation retries before it gives up (another instance kept winning). */
const MAX_CONFLICTS = 20;

/** The permits of the api instances of one prefix, in JetStream KV. */
export class KvPermitSource implements PermitSource {
  readonly #open: () => Promise<KV>;
  #kv: Promise<KV> | undefined;

  /** The bucket is created (with the bus's replicas) on first use; a failed attempt is tried again next time. */
  constructor(jetstream: BusJetStream, prefix: string) {
    this.#open = () => jetstream.kv(rateLimitBucket(prefix), { history: 1 });
  }

  /** Creates or binds to the bucket (once; a failed attempt is tried again on the next call). */
  open(): Promise<KV> {
    this.#kv ??= this.#open().catch((err: unknown) => {
      this.#kv = undefined;
      throw err;
    });
    return this.#kv;
  }

  async withdraw(scope: RateLimitScope, spec: BucketSpec, min: number, max: number, now: number): Promise<Withdrawal> {
    let result: Withdrawal = { got: 0, waitMs: 0 };
    await this.#change(scope, spec, now, (level) => {
      const available = Math.floor(level + 1e-9);
      if (available < min) {
        result = { got: 0, waitMs: ((min - level) * 60_000) / spec.perMinute };
        return undefined; // nothing to write
      }
      const got = Math.min(max, available);
      result = { got, waitMs: 0 };
      return level - got;
    });
    return result;
  }

  async deposit(scope: RateLimitScope, spec: BucketSpec, n: number, now: number): Promise<void> {
    if (n <= 0) return;
    await this.#change(scope, spec, now, (level) => Math.min(spec.capacity, level + n));
  }

  /**
   * Reads the scope's state, refilled to `now`, and writes `next(level)` unless it is undefined;
   * again from the read when another instance wrote in between.
   */
  async #change(scope: RateLimitScope, spec: BucketSpec, now: number, next: (level: number) => number | undefined): Promise<void> {
    const kv = await this.open();
    const key = rateLimitKey(scope);
    for (let attempt = 0; ; attempt++) {
      const entry = await kv.get(key);
      const stored = entry !== null && entry.operation === "PUT" ? RateLimitState.safeParse(safeJson(entry.string())) : undefined;
      // A missing (or unreadable) state is a full bucket.
      const state = stored?.success === true ? stored.data : { level: spec.capacity, at: now };
      const elapsed = Math.max(0, now - state.at);
      const level = Math.min(spec.capacity, state.level + (elapsed * spec.perMinute) / 60_000);
      const value = next(level);
      if (value === undefined) return;
      const data = JSON.stringify(RateLimitState.parse({ level: value, at: Math.max(state.at, Math.round(now)) }));
      try {
        if (entry === null || entry.operation !== "PUT") await kv.create(key, data);
        else await kv.update(key, data, entry.revision);
        return;
      } catch (err) {
        if (!isConflict(err) || attempt >= MAX_CONFLICTS) throw err;
      }
    }
  }
}

/** A create that lost the race fails like an update that did ("wrong last sequence", or "key exists"). */
function isConflict(err: unknown): boolean {
  return isRevisionConflict(err) || (err instanceof Error && /key exists/i.test(err.message));
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
