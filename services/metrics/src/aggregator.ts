/**
 * Folds metric events into sliding windows (10 s, 1 min, 5 min) per service and per worker,
 * lifetime totals (for Prometheus counters) and the workers' last reported slots, and renders
 * all of it as a {@link MetricsSnapshot}. Pure state with an injected clock: no timers, no bus.
 *
 * What counts where:
 * - latencies of a request (total, overhead, engine, queue, lease, memory, ttft, generation)
 *   are observed only for requests that succeeded, so a timed-out request does not pass for a
 *   slow one; failures and cancellations are counted instead;
 * - slot use and queue depth are sampled from the workers' periodic `worker_stats` events, so
 *   busy moments are not over-sampled; the gauges follow every event of a worker;
 * - the request counters and histograms are also kept per model ({@link ModelRequestTotals}, the
 *   Prometheus `model` label): by the model id the api resolved the request to, when that is a
 *   model some worker served (at most `MAX_MODEL_LABELS` of them), else under no model, so the
 *   label's values are bounded by the served models whatever clients send.
 *
 * @module
 */
import {
  type GenerationEvent,
  LATENCY_BUCKETS_S,
  type MetricEvent,
  type MetricsSnapshot,
  MetricsWindow,
  type MetricTotals,
  type RequestEvent,
  type ServiceEvent,
  WINDOW_MS,
  type WindowStats,
  type WorkerGauge,
  type WorkerStats,
  type WorkerStatsEvent,
} from "@atlas/contracts";
import { REQUEST_LATENCIES, requestStats, round, WORKER_LATENCIES, workerStats } from "./window_stats.ts";
import { type Clock, SlidingWindows } from "./windows.ts";

/** Options for {@link MetricsAggregator}. */
export interface AggregatorOptions {
  /** This metrics instance's id, put in every snapshot. */
  instance: string;
  /** Snapshot interval (`ATLAS_METRICS_INTERVAL`), reported in snapshots. */
  intervalMs: number;
  /** The clock (epoch ms); default `Date.now`. */
  now?: Clock;
  /** Forget a worker's gauges after this long without an event; default max(5 intervals, 15 s). */
  workerTtlMs?: number;
}

const WINDOW_NAMES = MetricsWindow.options;
const WINDOW_LENGTHS = WINDOW_NAMES.map((w) => WINDOW_MS[w]);

type WorkerTotals = MetricTotals["workers"][string];

/** Most models the request metrics are labelled with; requests of others count under no model. */
export const MAX_MODEL_LABELS = 64;

/** One model's request counters and latency histograms since the start (the Prometheus `model` label). */
export interface ModelRequestTotals {
  /** By `<endpoint>|<status>`. */
  requests: Record<string, number>;
  /** By error code. */
  errors: Record<string, number>;
  over_budget: number;
  tokens: { prompt: number; completion: number; cached: number };
  /** As `MetricTotals.latency_s`, always with buckets. */
  latency_s: Record<string, { sum: number; count: number; buckets: number[] }>;
}

/** Sliding-window analytics over every service's metric events. */
export class MetricsAggregator {
  readonly instance: string;
  readonly intervalMs: number;
  readonly startedAt: number;
  readonly #now: Clock;
  readonly #workerTtlMs: number;
  readonly #api: SlidingWindows;
  readonly #allWorkers: SlidingWindows;
  readonly #workers = new Map<string, SlidingWindows>();
  readonly #services: SlidingWindows;
  readonly #serviceNames = new Set<string>();
  readonly #gauges = new Map<string, WorkerGauge>();
  readonly #totals: MetricTotals;
  /** Request totals by model label (`""`: no model). */
  readonly #byModel = new Map<string, ModelRequestTotals>();
  /** Models served by some worker (seen in worker events, or running a request): the label's values. */
  readonly #models = new Set<string>();
  /** Each worker's model, as it last reported it. */
  readonly #workerModels = new Map<string, string>();

  constructor(options: AggregatorOptions) {
    this.instance = options.instance;
    this.intervalMs = options.intervalMs;
    this.#now = options.now ?? Date.now;
    this.startedAt = this.#now();
    this.#workerTtlMs = options.workerTtlMs ?? Math.max(5 * options.intervalMs, 15_000);
    this.#api = this.#windows();
    this.#allWorkers = this.#windows();
    this.#services = this.#windows();
    this.#totals = {
      requests: {},
      errors: {},
      over_budget: 0,
      cache: { l1: 0, l2: 0, l3: 0, miss: 0, none: 0 },
      tokens: { prompt: 0, completion: 0, cached: 0 },
      latency_s: {},
      workers: {},
      services: {},
    };
  }

  /** Records one event. O(1) apart from the histograms' own work. */
  record(event: MetricEvent): void {
    const failed = (event.type === "request" || event.type === "generation") && event.status === "error";
    const isError = failed || (event.type === "service" && event.event === "error");
    this.#countService(event.service, isError, event.type === "service" && event.event === "started");
    switch (event.type) {
      case "request":
        return this.#request(event);
      case "generation":
        return this.#generation(event);
      case "worker_stats":
        return this.#workerStats(event);
      case "service":
        return this.#service(event);
    }
  }

  /** The current view: every window (or the ones named), gauges and totals. */
  snapshot(seq: number, windows: readonly MetricsWindow[] = WINDOW_NAMES): MetricsSnapshot {
    const now = this.#now();
    this.#forgetSilentWorkers(now);
    const out: MetricsSnapshot["windows"] = {};
    for (const name of windows) out[name] = this.#windowStats(name);
    return {
      seq,
      instance: this.instance,
      ts: now,
      interval_ms: this.intervalMs,
      started_at: this.startedAt,
      windows: out,
      workers: Object.fromEntries(this.#gauges),
      totals: structuredClone(this.#totals),
    };
  }

  /** Request totals by model (`""`: requests that named no served model); read-only. */
  modelTotals(): ReadonlyMap<string, Readonly<ModelRequestTotals>> {
    return this.#byModel;
  }

  /** Each worker's model, as it last reported it (every worker of the totals); read-only. */
  workerModels(): ReadonlyMap<string, string> {
    return this.#workerModels;
  }

  #servedModel(model: string): void {
    if (this.#models.size < MAX_MODEL_LABELS) this.#models.add(model);
  }

  /** The totals of a request's model label. */
  #modelTotals(e: RequestEvent): ModelRequestTotals {
    // A request that ran on workers names a served model (the api sends the resolved id).
    if (e.model !== null && e.workers.length > 0) this.#servedModel(e.model);
    const label = e.model !== null && this.#models.has(e.model) ? e.model : "";
    let t = this.#byModel.get(label);
    if (t === undefined) {
      t = { requests: {}, errors: {}, over_budget: 0, tokens: { prompt: 0, completion: 0, cached: 0 }, latency_s: {} };
      this.#byModel.set(label, t);
    }
    return t;
  }

  #windows(): SlidingWindows {
    return new SlidingWindows({ windowsMs: WINDOW_LENGTHS, now: this.#now, startedAt: this.startedAt });
  }

  #countService(service: string, error: boolean, started: boolean): void {
    this.#serviceNames.add(service);
    this.#services.add(`${service}|events`);
    if (error) this.#services.add(`${service}|errors`);
    if (started) this.#services.add(`${service}|starts`);
    const t = this.#totals.services[service] ?? { events: 0, errors: 0, starts: 0 };
    this.#totals.services[service] = t;
    t.events += 1;
    if (error) t.errors += 1;
    if (started) t.starts += 1;
  }

  #request(e: RequestEvent): void {
    const w = this.#api;
    const t = this.#totals;
    const m = this.#modelTotals(e);
    w.add("requests");
    w.add(`endpoint:${e.endpoint}`);
    const key = `${e.endpoint}|${e.status}`;
    t.requests[key] = (t.requests[key] ?? 0) + 1;
    m.requests[key] = (m.requests[key] ?? 0) + 1;
    if (e.stream) w.add("streamed");
    if (e.status === "cancelled") w.add("cancelled");
    if (e.status === "error") {
      const code = e.error_code ?? "unknown";
      w.add("errors");
      w.add(`code:${code}`);
      t.errors[code] = (t.errors[code] ?? 0) + 1;
      m.errors[code] = (m.errors[code] ?? 0) + 1;
    }
    if (e.over_budget) {
      w.add("over_budget");
      t.over_budget += 1;
      m.over_budget += 1;
    }
    w.add(`cache:${e.cache}`);
    t.cache[e.cache] += 1;
    w.add("tokens:prompt", e.tokens.prompt);
    w.add("tokens:completion", e.tokens.completion);
    w.add("tokens:cached", e.tokens.cached);
    for (const tokens of [t.tokens, m.tokens]) {
      tokens.prompt += e.tokens.prompt;
      tokens.completion += e.tokens.completion;
      tokens.cached += e.tokens.cached;
    }
    if (e.status !== "ok") return;
    for (const k of REQUEST_LATENCIES) {
      const ms = e.latency_ms[k];
      w.observe(k, ms);
      const s = t.latency_s[k] ?? { sum: 0, count: 0, buckets: LATENCY_BUCKETS_S.map(() => 0) };
      t.latency_s[k] = s;
      const byModel = m.latency_s[k] ?? { sum: 0, count: 0, buckets: LATENCY_BUCKETS_S.map(() => 0) };
      m.latency_s[k] = byModel;
      for (const h of [s, byModel]) observeSeconds(h, ms / 1000);
    }
  }

  #generation(e: GenerationEvent): void {
    this.#gauge(e.worker_id, e);
    const t = this.#workerTotals(e.worker_id);
    t.generations += 1;
    t.prompt_tokens += e.tokens.prompt;
    t.completion_tokens += e.tokens.completion;
    t.cached_tokens += e.tokens.cached;
    if (e.status === "error") t.errors += 1;
    for (const w of [this.#worker(e.worker_id), this.#allWorkers]) {
      w.add("generations");
      if (e.status === "error") w.add("errors");
      w.add("tokens:prompt", e.tokens.prompt);
      w.add("tokens:completion", e.tokens.completion);
      w.add("tokens:cached", e.tokens.cached);
      if (e.status === "ok") for (const k of WORKER_LATENCIES) w.observe(k, e.latency_ms[k]);
    }
  }

  #workerStats(e: WorkerStatsEvent): void {
    this.#gauge(e.worker_id, e);
    this.#workerTotals(e.worker_id);
    const busy = Math.max(0, e.slots - e.free_slots);
    for (const w of [this.#worker(e.worker_id), this.#allWorkers]) {
      w.add("samples");
      w.add("slot_use_sum", e.slots === 0 ? 0 : busy / e.slots);
      w.add("queued_sum", e.queued);
      w.sampleMax("queued", e.queued);
    }
  }

  #service(_e: ServiceEvent): void {
    // Counted by #countService; nothing else to keep.
  }

  #gauge(id: string, e: { model: string; slots: number; free_slots: number; queued: number }): void {
    this.#servedModel(e.model);
    this.#workerModels.set(id, e.model);
    this.#gauges.set(id, {
      model: e.model,
      slots: e.slots,
      busy: Math.max(0, e.slots - e.free_slots),
      queued: e.queued,
      seen_at: this.#now(),
    });
  }

  #worker(id: string): SlidingWindows {
    let w = this.#workers.get(id);
    if (w === undefined) {
      w = this.#windows();
      this.#workers.set(id, w);
    }
    return w;
  }

  #workerTotals(id: string): WorkerTotals {
    const t = this.#totals.workers[id] ?? { generations: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0 };
    this.#totals.workers[id] = t;
    return t;
  }

  #forgetSilentWorkers(now: number): void {
    for (const [id, g] of this.#gauges) if (now - g.seen_at > this.#workerTtlMs) this.#gauges.delete(id);
    for (const [id, w] of this.#workers) if (!this.#gauges.has(id) && w.isEmpty()) this.#workers.delete(id);
  }

  #windowStats(name: MetricsWindow): WindowStats {
    const i = WINDOW_NAMES.indexOf(name);
    const workers: Record<string, WorkerStats> = {};
    for (const [id, w] of this.#workers) workers[id] = workerStats(w, i);
    const services: WindowStats["services"] = {};
    for (const s of this.#serviceNames) {
      const events = this.#services.count(i, `${s}|events`);
      if (events === 0) continue;
      services[s] = { events, errors: this.#services.count(i, `${s}|errors`), starts: this.#services.count(i, `${s}|starts`) };
    }
    return {
      window: name,
      span_s: round(this.#api.spanMs(i) / 1000),
      api: requestStats(this.#api, i),
      worker: workerStats(this.#allWorkers, i),
      workers,
      services,
    };
  }
}

/** Adds one observation (seconds) to a lifetime histogram. */
function observeSeconds(h: { sum: number; count: number; buckets?: number[] | undefined }, seconds: number): void {
  h.sum += seconds;
  h.count += 1;
  // Cumulative, as Prometheus's `le`: every bucket whose bound holds it.
  const buckets = h.buckets as number[];
  for (let i = LATENCY_BUCKETS_S.length - 1; i >= 0 && seconds <= (LATENCY_BUCKETS_S[i] as number); i--) buckets[i] = (buckets[i] ?? 0) + 1;
}
