/**
 * A byte-budgeted cache simulator: replays a trace through a policy and counts what a tier
 * with that budget would have served. Used by the tests and the cache-policy benchmark.
 *
 * A request for session k of s bytes is a hit when k is resident. Otherwise it is a miss and
 * k is admitted, then victims (never k) are evicted until the resident bytes fit the budget.
 * A session larger than the whole budget is a miss and is not admitted. Sessions that grow
 * are re-sized on their next request.
 *
 * @module
 */
import type { CachePolicy } from "./policy.ts";
import type { TraceRequest } from "./traces.ts";

/** Options of {@link simulate}. */
export interface SimulateOptions {
  /** The tier's budget in bytes. */
  readonly budgetBytes: number;
  /**
   * The cost hint passed to the policy on each request: `unit` (every miss costs the same:
   * optimise the hit ratio; default) or `tokens` (a miss costs its tokens: optimise the
   * tokens not recomputed).
   */
  readonly cost?: "unit" | "tokens";
}

/** What a simulated tier served. */
export interface SimulationResult {
  readonly requests: number;
  readonly hits: number;
  readonly misses: number;
  /** hits ÷ requests (0 for an empty trace). */
  readonly hitRatio: number;
  /** Tokens of the hit requests ÷ tokens of all requests: the share of prefill avoided. */
  readonly tokenHitRatio: number;
  readonly evictions: number;
  readonly bytesEvicted: number;
  /** Requests larger than the budget, never admitted. */
  readonly bypassed: number;
}

/** Replays `trace` through `policy` (which should start empty) in a tier of `budgetBytes`. */
export function simulate(trace: Iterable<TraceRequest>, policy: CachePolicy, options: SimulateOptions): SimulationResult {
  const { budgetBytes } = options;
  if (!(budgetBytes > 0)) throw new RangeError(`Cannot simulate a budget of ${budgetBytes} bytes: it must be > 0`);
  const byTokens = options.cost === "tokens";
  /** The simulator's own view of residency, to account evicted bytes and check the policy's. */
  const resident = new Map<string, number>();
  let requests = 0;
  let hits = 0;
  let tokens = 0;
  let hitTokens = 0;
  let evictions = 0;
  let bytesEvicted = 0;
  let bypassed = 0;
  for (const { key, sizeBytes, tokens: t } of trace) {
    requests++;
    tokens += t;
    if (sizeBytes > budgetBytes) {
      bypassed++;
      if (policy.remove(key)) resident.delete(key);
      continue;
    }
    const hit = byTokens ? policy.touch(key, sizeBytes, { cost: Math.max(t, 1) }) : policy.touch(key, sizeBytes);
    if (hit !== resident.has(key))
      throw new Error(`Policy "${policy.algorithm}" reported hit=${hit} for "${key}" out of step with the cache`);
    if (hit) {
      hits++;
      hitTokens += t;
    }
    resident.set(key, sizeBytes);
    while (policy.bytes > budgetBytes) {
      const victim = policy.victim({ incoming: key });
      if (victim === undefined) throw new Error(`Policy "${policy.algorithm}" found no victim with ${policy.bytes} bytes resident`);
      const size = resident.get(victim);
      if (size === undefined || !policy.evict(victim)) {
        throw new Error(`Policy "${policy.algorithm}" chose "${victim}", which is not resident`);
      }
      resident.delete(victim);
      evictions++;
      bytesEvicted += size;
    }
  }
  if (resident.size !== policy.size)
    throw new Error(`Policy "${policy.algorithm}" holds ${policy.size} entries, the cache ${resident.size}`);
  return simulationResult({ requests, hits, tokens, hitTokens, evictions, bytesEvicted, bypassed });
}

/** A {@link SimulationResult} from a replay's counts (shared with `belady.ts`). */
export function simulationResult(c: {
  requests: number;
  hits: number;
  tokens: number;
  hitTokens: number;
  evictions: number;
  bytesEvicted: number;
  bypassed: number;
}): SimulationResult {
  return {
    requests: c.requests,
    hits: c.hits,
    misses: c.requests - c.hits,
    hitRatio: c.requests === 0 ? 0 : c.hits / c.requests,
    tokenHitRatio: c.tokens === 0 ? 0 : c.hitTokens / c.tokens,
    evictions: c.evictions,
    bytesEvicted: c.bytesEvicted,
    bypassed: c.bypassed,
  };
}
