/**
 * One window's figures as a snapshot shows them (`RequestStats`, `WorkerStats`): rates over the
 * window's span, shares of the cache tiers, latency percentiles rounded for the wire. Pure
 * functions of a `SlidingWindows` (`windows.ts`), which the aggregator (`aggregator.ts`) fills.
 *
 * @module
 */
import type { CacheOutcome, RequestStats, WorkerStats } from "@atlas/contracts";
import type { Percentiles, SlidingWindows } from "./windows.ts";

/** The latencies the api's request events carry. */
export const REQUEST_LATENCIES = ["total", "overhead", "engine", "queue", "lease", "memory", "ttft", "generation"] as const;
/** The latencies the workers' generation events carry. */
export const WORKER_LATENCIES = ["queue", "ttft", "generation"] as const;
/** Where a request's prompt prefix was found, as counted. */
export const TIERS = ["l1", "l2", "l3", "miss", "none"] as const satisfies readonly CacheOutcome[];

/** Seconds a rate divides by: the window's span, at least one second (a young window). */
function rateSpan(w: SlidingWindows, i: number): number {
  return Math.max(1, w.spanMs(i) / 1000);
}

export function requestStats(w: SlidingWindows, i: number): RequestStats {
  const span = rateSpan(w, i);
  const requests = w.count(i, "requests");
  const errors = w.count(i, "errors");
  const tiers = Object.fromEntries(TIERS.map((t) => [t, w.count(i, `cache:${t}`)])) as Record<CacheOutcome, number>;
  const known = tiers.l1 + tiers.l2 + tiers.l3 + tiers.miss;
  const share = (n: number) => (known === 0 ? 0 : round(n / known));
  const latency = Object.fromEntries(REQUEST_LATENCIES.map((k) => [k, rounded(w.percentiles(i, k))])) as RequestStats["latency_ms"];
  return {
    requests,
    rate: round(requests / span),
    errors,
    error_rate: round(errors / span),
    cancelled: w.count(i, "cancelled"),
    streamed: w.count(i, "streamed"),
    over_budget: w.count(i, "over_budget"),
    tokens: tokenStats(w, i, span),
    cache: {
      ...tiers,
      hit_ratio: share(tiers.l1 + tiers.l2 + tiers.l3),
      ratio: { l1: share(tiers.l1), l2: share(tiers.l2), l3: share(tiers.l3), miss: share(tiers.miss) },
    },
    latency_ms: latency,
    endpoints: w.countsWithPrefix(i, "endpoint:"),
    error_codes: w.countsWithPrefix(i, "code:"),
  };
}

export function workerStats(w: SlidingWindows, i: number): WorkerStats {
  const span = rateSpan(w, i);
  const generations = w.count(i, "generations");
  const samples = w.count(i, "samples");
  const latency = Object.fromEntries(WORKER_LATENCIES.map((k) => [k, rounded(w.percentiles(i, k))])) as WorkerStats["latency_ms"];
  return {
    generations,
    rate: round(generations / span),
    errors: w.count(i, "errors"),
    tokens: tokenStats(w, i, span),
    latency_ms: latency,
    slot_use: samples === 0 ? 0 : Math.min(1, Math.max(0, round(w.count(i, "slot_use_sum") / samples))),
    queue_depth: { mean: samples === 0 ? 0 : Math.max(0, round(w.count(i, "queued_sum") / samples)), max: w.max(i, "queued") },
  };
}

function tokenStats(w: SlidingWindows, i: number, span: number): RequestStats["tokens"] {
  const prompt = w.count(i, "tokens:prompt");
  const completion = w.count(i, "tokens:completion");
  return {
    prompt,
    completion,
    cached: w.count(i, "tokens:cached"),
    completion_per_s: round(completion / span),
    prompt_per_s: round(prompt / span),
  };
}

function rounded(p: Percentiles): Percentiles {
  return { count: p.count, mean: round(p.mean), max: round(p.max), p50: round(p.p50), p95: round(p.p95), p99: round(p.p99) };
}

/** Rounds to microseconds (ms values) / six decimals, so snapshots stay short. */
export function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}
