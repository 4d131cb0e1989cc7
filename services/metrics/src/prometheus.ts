/**
 * Renders the metrics service's view in the Prometheus text exposition format (version 0.0.4),
 * answering `metrics.prometheus` (the api serves it at `GET /metrics`, with its own instance's
 * gauges appended). Counters are lifetime totals (`_total`); request latencies are histograms
 * over fixed buckets (`LATENCY_BUCKETS_S`), lifetime too, so that several scrapes, instances and
 * days add up in PromQL (`histogram_quantile(0.95, sum by (le) (rate(…_bucket[5m])))`); slots
 * and queue depth are gauges; the sliding windows' rates are gauges by `window`. Units are
 * seconds, names `atlas_…`. Every name is listed in `docs/metrics.md`.
 *
 * Request counters carry a `model` label: the served model id the request ran on (or asked for,
 * when it failed); requests that named no served model (a 404, a bad body) have none. The
 * cluster-wide latency histograms stay unlabelled; `atlas_model_*_seconds` are the latencies a
 * model decides (total, time to first token, generation) by `model`. Worker counters and gauges
 * carry their worker's model. The label takes only the served models' ids (`MAX_MODEL_LABELS` at
 * most), so `sum without (model) (…)` of a counter gives the cluster's total.
 *
 * @module
 */
import { LATENCY_BUCKETS_S, type MetricsSnapshot, type WindowStats } from "@atlas/contracts";
import { type PromLabels, type PromSample, PromText } from "@atlas/service";
import type { ModelRequestTotals } from "./aggregator.ts";

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

/** Request latencies also kept per served model (`model` label), and their metric names. */
const MODEL_LATENCIES = [
  ["total", "atlas_model_request_duration_seconds", "Time from a request's arrival to its last byte, by model."],
  ["ttft", "atlas_model_time_to_first_token_seconds", "Time from a slot being free to the first generated token, by model."],
  ["generation", "atlas_model_generation_seconds", "Generation time after the first token, by model."],
] as const;

/** What {@link renderPrometheus} needs besides the snapshot. */
export interface PrometheusOptions {
  /** The configured `ATLAS_LATENCY_BUDGET_MS`. */
  budgetMs: number;
  /**
   * The request totals by model (`""`: no model), from `MetricsAggregator.modelTotals`; without
   * them the request metrics are the snapshot's totals, unlabelled.
   */
  byModel?: ReadonlyMap<string, Readonly<ModelRequestTotals>>;
  /** Each worker's model, from `MetricsAggregator.workerModels` (the worker metrics' `model` label). */
  workerModels?: ReadonlyMap<string, string>;
}

/** `{ model }` for a model label, nothing for none. */
const modelLabel = (model: string | undefined): PromLabels => (model === undefined || model === "" ? {} : { model });

/** A histogram's samples (buckets with `+Inf`, sum, count) under `labels`, as `PromText.histogram` writes them. */
function histogramSamples(h: { sum: number; count: number; buckets?: readonly number[] | undefined }, labels: PromLabels): PromSample[] {
  const counts = h.buckets ?? LATENCY_BUCKETS_S.map(() => 0);
  return [
    ...LATENCY_BUCKETS_S.map((le, i) => ({ suffix: "_bucket", labels: { ...labels, le: String(le) }, value: counts[i] ?? 0 })),
    { suffix: "_bucket", labels: { ...labels, le: "+Inf" }, value: h.count },
    { suffix: "_sum", labels, value: h.sum },
    { suffix: "_count", labels, value: h.count },
  ];
}

/** Renders the snapshot. */
export function renderPrometheus(s: MetricsSnapshot, options: PrometheusOptions): string {
  const out = new PromText();
  const family = out.family.bind(out);
  const t = s.totals;
  // The request totals by model label; without them, the snapshot's, under no model.
  const byModel: [string, Readonly<ModelRequestTotals>][] =
    options.byModel === undefined ? [["", { ...t, latency_s: t.latency_s as ModelRequestTotals["latency_s"] }]] : [...options.byModel];
  const perModel = (value: (m: Readonly<ModelRequestTotals>) => number): PromSample[] =>
    byModel.length === 0 ? [{ value: 0 }] : byModel.map(([model, m]) => ({ labels: modelLabel(model), value: value(m) }));
  const workerLabels = (worker: string): PromLabels => ({
    worker,
    ...modelLabel(options.workerModels?.get(worker) ?? s.workers[worker]?.model),
  });

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
    "Requests on the generation endpoints, by endpoint, outcome (ok, error, cancelled) and model.",
    byModel.flatMap(([model, m]) =>
      Object.entries(m.requests).map(([key, value]) => {
        const [endpoint = "", status = ""] = key.split("|");
        return { labels: { endpoint, status, ...modelLabel(model) }, value };
      }),
    ),
  );
  family(
    "atlas_request_errors_total",
    "counter",
    "Failed requests by OpenAI error code and model.",
    byModel.flatMap(([model, m]) => Object.entries(m.errors).map(([code, value]) => ({ labels: { code, ...modelLabel(model) }, value }))),
  );
  family(
    "atlas_requests_over_budget_total",
    "counter",
    "Successful requests whose api overhead exceeded the latency budget, by model.",
    perModel((m) => m.over_budget),
  );
  family(
    "atlas_cache_requests_total",
    "counter",
    "Requests by prompt cache outcome: tier l1, l2, l3, miss, or none (unknown).",
    Object.entries(t.cache).map(([outcome, value]) => ({ labels: { outcome }, value })),
  );
  family(
    "atlas_prompt_tokens_total",
    "counter",
    "Prompt tokens of requests (once per sequence), by model.",
    perModel((m) => m.tokens.prompt),
  );
  family(
    "atlas_completion_tokens_total",
    "counter",
    "Generated tokens of requests, by model.",
    perModel((m) => m.tokens.completion),
  );
  family(
    "atlas_cached_prompt_tokens_total",
    "counter",
    "Prompt tokens found in a cache and not evaluated again, by model.",
    perModel((m) => m.tokens.cached),
  );

  for (const [key, name, help] of REQUEST_LATENCIES) {
    const life = t.latency_s[key] ?? { sum: 0, count: 0 };
    const counts = life.buckets ?? LATENCY_BUCKETS_S.map(() => 0);
    out.histogram(name, help, { bounds: LATENCY_BUCKETS_S, counts, sum: life.sum, count: life.count });
  }
  // The same per model, for the latencies the model decides (only successful requests are observed).
  for (const [key, name, help] of MODEL_LATENCIES) {
    family(
      name,
      "histogram",
      help,
      byModel.flatMap(([model, m]) => {
        const h = m.latency_s[key];
        return model === "" || h === undefined || h.count === 0 ? [] : histogramSamples(h, { model });
      }),
    );
  }

  const workerTotals = Object.entries(t.workers);
  family(
    "atlas_worker_generations_total",
    "counter",
    "Sequences generated, by worker (and its model).",
    workerTotals.map(([worker, w]) => ({ labels: workerLabels(worker), value: w.generations })),
  );
  family(
    "atlas_worker_errors_total",
    "counter",
    "Sequences that failed, by worker (and its model).",
    workerTotals.map(([worker, w]) => ({ labels: workerLabels(worker), value: w.errors })),
  );
  family(
    "atlas_worker_prompt_tokens_total",
    "counter",
    "Prompt tokens processed, by worker (and its model).",
    workerTotals.map(([worker, w]) => ({ labels: workerLabels(worker), value: w.prompt_tokens })),
  );
  family(
    "atlas_worker_completion_tokens_total",
    "counter",
    "Tokens generated, by worker (and its model).",
    workerTotals.map(([worker, w]) => ({ labels: workerLabels(worker), value: w.completion_tokens })),
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
    "Slots generating right now, by worker (and its model).",
    gauges.map(([worker, g]) => ({ labels: { worker, model: g.model }, value: g.busy })),
  );
  family(
    "atlas_worker_queue_depth",
    "gauge",
    "Sequences waiting for a slot, by worker (and its model).",
    gauges.map(([worker, g]) => ({ labels: { worker, model: g.model }, value: g.queued })),
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
