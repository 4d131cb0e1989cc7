/**
 * Renders the metrics service's view in the Prometheus text exposition format (version 0.0.4),
 * answering `metrics.prometheus` (the api serves it at `GET /metrics`, with its own instance's
 * gauges appended). Counters are lifetime totals (`_total`); request latencies are histograms
 * over fixed buckets (`LATENCY_BUCKETS_S`), lifetime too, so that several scrapes, instances and
 * days add up in PromQL (`histogram_quantile(0.95, sum by (le) (rate(…_bucket[5m])))`); slots
 * and queue depth are gauges; the sliding windows' rates are gauges by `window`. Units are
 * seconds, names `atlas_…`. Every name is listed in `docs/metrics.md`.
 *
 * @module
 */
import { LATENCY_BUCKETS_S, type MetricsSnapshot, type WindowStats } from "@atlas/contracts";
import { PromText } from "@atlas/service";

/** Request latencies and their metric names (all histograms, in seconds). */
const REQUEST_LATENCIES = [
  ["total", "atlas_request_duration_seconds", "Time from a request's arrival to its last byte."],
  [
    "overhead",
    "atlas_request_overhead_seconds",
    "Request time outside the engine (total minus engine time): the api, the bus and services.",
  ],
  ["engine", "atlas_request_engine_seconds", "Time inside the worker: slot queue, time to first token and generation."],
  ["queue", "atlas_request_queue_seconds", "Time a request's sequence waited for a free slot inside a worker."],
  ["lease", "atlas_request_lease_seconds", "Time spent getting a slot lease from the scheduler."],
  ["memory", "atlas_request_memory_seconds", "Time spent recalling session memory."],
  ["ttft", "atlas_time_to_first_token_seconds", "Time from a slot being free to the first generated token."],
  ["generation", "atlas_generation_seconds", "Generation time after the first token."],
] as const;

/** Renders the snapshot; `budgetMs` is the configured `ATLAS_LATENCY_BUDGET_MS`. */
export function renderPrometheus(s: MetricsSnapshot, options: { budgetMs: number }): string {
  const out = new PromText();
  const family = out.family.bind(out);
  const t = s.totals;

  family("atlas_metrics_up", "gauge", "1 when the metrics service answered this scrape.", [{ value: 1 }]);
  family("atlas_metrics_started_timestamp_seconds", "gauge", "When the metrics service started counting (the counters' origin).", [
    { value: s.started_at / 1000 },
  ]);
  family("atlas_latency_budget_seconds", "gauge", "The api overhead budget per request (ATLAS_LATENCY_BUDGET_MS).", [
    { value: options.budgetMs / 1000 },
  ]);

  family(
    "atlas_requests_total",
    "counter",
    "Requests on the generation endpoints, by endpoint and outcome (ok, error, cancelled).",
    Object.entries(t.requests).map(([key, value]) => {
      const [endpoint = "", status = ""] = key.split("|");
      return { labels: { endpoint, status }, value };
    }),
  );
  family(
    "atlas_request_errors_total",
    "counter",
    "Failed requests by OpenAI error code.",
    Object.entries(t.errors).map(([code, value]) => ({ labels: { code }, value })),
  );
  family("atlas_requests_over_budget_total", "counter", "Successful requests whose api overhead exceeded the latency budget.", [
    { value: t.over_budget },
  ]);
  family(
    "atlas_cache_requests_total",
    "counter",
    "Requests by prompt cache outcome: tier l1, l2, l3, miss, or none (unknown).",
    Object.entries(t.cache).map(([outcome, value]) => ({ labels: { outcome }, value })),
  );
  family("atlas_prompt_tokens_total", "counter", "Prompt tokens of requests (once per sequence).", [{ value: t.tokens.prompt }]);
  family("atlas_completion_tokens_total", "counter", "Generated tokens of requests.", [{ value: t.tokens.completion }]);
  family("atlas_cached_prompt_tokens_total", "counter", "Prompt tokens found in a cache and not evaluated again.", [
    { value: t.tokens.cached },
  ]);

  for (const [key, name, help] of REQUEST_LATENCIES) {
    const life = t.latency_s[key] ?? { sum: 0, count: 0 };
    const counts = life.buckets ?? LATENCY_BUCKETS_S.map(() => 0);
    out.histogram(name, help, { bounds: LATENCY_BUCKETS_S, counts, sum: life.sum, count: life.count });
  }

  const workerTotals = Object.entries(t.workers);
  family(
    "atlas_worker_generations_total",
    "counter",
    "Sequences generated, by worker.",
    workerTotals.map(([worker, w]) => ({ labels: { worker }, value: w.generations })),
  );
  family(
    "atlas_worker_errors_total",
    "counter",
    "Sequences that failed, by worker.",
    workerTotals.map(([worker, w]) => ({ labels: { worker }, value: w.errors })),
  );
  family(
    "atlas_worker_prompt_tokens_total",
    "counter",
    "Prompt tokens processed, by worker.",
    workerTotals.map(([worker, w]) => ({ labels: { worker }, value: w.prompt_tokens })),
  );
  family(
    "atlas_worker_completion_tokens_total",
    "counter",
    "Tokens generated, by worker.",
    workerTotals.map(([worker, w]) => ({ labels: { worker }, value: w.completion_tokens })),
  );

  const gauges = Object.entries(s.workers);
  family(
    "atlas_worker_slots",
    "gauge",
    "Context slots of a worker.",
    gauges.map(([worker, g]) => ({ labels: { worker, model: g.model }, value: g.slots })),
  );
  family(
    "atlas_worker_slots_busy",
    "gauge",
    "Slots generating right now, by worker.",
    gauges.map(([worker, g]) => ({ labels: { worker }, value: g.busy })),
  );
  family(
    "atlas_worker_queue_depth",
    "gauge",
    "Sequences waiting for a slot, by worker.",
    gauges.map(([worker, g]) => ({ labels: { worker }, value: g.queued })),
  );

  const services = Object.entries(t.services);
  family(
    "atlas_service_events_total",
    "counter",
    "Metric events received, by sending service.",
    services.map(([service, v]) => ({ labels: { service }, value: v.events })),
  );
  family(
    "atlas_service_errors_total",
    "counter",
    "Errors reported, by service.",
    services.map(([service, v]) => ({ labels: { service }, value: v.errors })),
  );
  family(
    "atlas_service_starts_total",
    "counter",
    "Service instance starts seen (more than one per instance means restarts).",
    services.map(([service, v]) => ({ labels: { service }, value: v.starts })),
  );

  const windows = Object.values(s.windows).filter((w): w is WindowStats => w !== undefined);
  family(
    "atlas_window_requests_per_second",
    "gauge",
    "Request rate over a sliding window (10s, 1m, 5m).",
    windows.map((w) => ({ labels: { window: w.window }, value: w.api.rate })),
  );
  family(
    "atlas_window_completion_tokens_per_second",
    "gauge",
    "Generated tokens per second over a sliding window.",
    windows.map((w) => ({ labels: { window: w.window }, value: w.api.tokens.completion_per_s })),
  );
  family(
    "atlas_window_cache_hit_ratio",
    "gauge",
    "Share of requests with a known cache outcome that hit a tier, over a sliding window.",
    windows.map((w) => ({ labels: { window: w.window }, value: w.api.cache.hit_ratio })),
  );
  family(
    "atlas_window_slot_use_ratio",
    "gauge",
    "Busy slots over slots, averaged over a sliding window, by worker.",
    windows.flatMap((w) => Object.entries(w.workers).map(([worker, ws]) => ({ labels: { window: w.window, worker }, value: ws.slot_use }))),
  );
  return out.toString();
}
