/**
 * Renders a metrics snapshot in the Prometheus text exposition format (version 0.0.4) for
 * `GET /metrics`. Counters are the metrics service's lifetime totals (`_total`); latencies are
 * summaries whose quantiles cover the last minute and whose `_sum` / `_count` are lifetime, as
 * Prometheus client libraries do for sliding-window summaries; slots and queue depth are gauges.
 * Units are seconds, names `atlas_…`. Every name is listed in `docs/metrics.md`.
 *
 * @module
 */
import type { LatencySummary, MetricsSnapshot, WindowStats } from "@atlas/contracts";

/** The content type Prometheus expects for this format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Record<string, string>;
type Sample = { suffix?: string; labels?: Labels; value: number };

/** Request latencies and their metric names (all summaries, in seconds). */
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
  const out: string[] = [];
  const family = (name: string, type: "counter" | "gauge" | "summary", help: string, samples: Sample[]) => {
    out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const x of samples) out.push(`${name}${x.suffix ?? ""}${labels(x.labels)} ${num(x.value)}`);
  };
  const t = s.totals;
  const minute = s.windows["1m"];

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
    family(name, "summary", `${help} Quantiles over the last minute.`, [
      ...quantiles(minute?.api.latency_ms[key]),
      { suffix: "_sum", value: life.sum },
      { suffix: "_count", value: life.count },
    ]);
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
  return `${out.join("\n")}\n`;
}

/** The api's own state, appended to the metrics service's families (this api instance only). */
export interface ApiGauges {
  instance: string;
  breakers: readonly { name: string; state: "closed" | "open" | "half_open"; opened: number }[];
  admission: { running: number; queued: number; max: number };
  /** Refusals by reason (`admission_queue_full`, `rate_limit_session_requests`…). */
  refused: Record<string, number>;
}

const BREAKER_VALUE = { closed: 0, half_open: 1, open: 2 } as const;

/** Renders the api's own gauges: circuit breakers, admission, refusals. */
export function renderApiGauges(g: ApiGauges): string {
  const out: string[] = [];
  const family = (name: string, type: "counter" | "gauge", help: string, samples: Sample[]) => {
    out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const x of samples) out.push(`${name}${labels({ api: g.instance, ...x.labels })} ${num(x.value)}`);
  };
  family(
    "atlas_circuit_breaker_state",
    "gauge",
    "Circuit breaker of a downstream service as this api sees it: 0 closed, 1 half-open, 2 open.",
    g.breakers.map((b) => ({ labels: { downstream: b.name }, value: BREAKER_VALUE[b.state] })),
  );
  family(
    "atlas_circuit_breaker_opened_total",
    "counter",
    "Times a circuit breaker opened since this api started.",
    g.breakers.map((b) => ({ labels: { downstream: b.name }, value: b.opened })),
  );
  family("atlas_api_requests_running", "gauge", "Generation requests this api runs now (of ATLAS_MAX_CONCURRENT).", [
    { value: g.admission.running },
  ]);
  family("atlas_api_requests_queued", "gauge", "Generation requests waiting for admission in this api.", [{ value: g.admission.queued }]);
  family("atlas_api_max_concurrent", "gauge", "ATLAS_MAX_CONCURRENT of this api.", [{ value: g.admission.max }]);
  family(
    "atlas_api_refused_total",
    "counter",
    "Requests this api refused with a 429 (rate limits) or a 503 (admission), by reason.",
    Object.entries(g.refused).map(([reason, value]) => ({ labels: { reason }, value })),
  );
  return `${out.join("\n")}\n`;
}

/** Quantiles in seconds; NaN without observations in the window, as Prometheus clients do. */
function quantiles(p: LatencySummary | undefined): Sample[] {
  if (p === undefined) return [];
  const v = (ms: number) => (p.count === 0 ? Number.NaN : ms / 1000);
  return [
    { labels: { quantile: "0.5" }, value: v(p.p50) },
    { labels: { quantile: "0.95" }, value: v(p.p95) },
    { labels: { quantile: "0.99" }, value: v(p.p99) },
  ];
}

function labels(l: Labels | undefined): string {
  if (l === undefined) return "";
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function escapeLabel(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function escapeHelp(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v);
}
