/**
 * What the metrics service makes of the events (`metrics.ts`): windows of stats, cumulative
 * totals, the snapshot it publishes every `ATLAS_METRICS_INTERVAL` ms, and what it answers.
 *
 * | message | subject | sender | handler |
 * |---|---|---|---|
 * | `MetricsSnapshotEvent` | `<prefix>.metrics.snapshot` | `services/metrics/src/service.ts` | `services/api/src/metrics/feed.ts` (the api's relay cache), anyone |
 * | `MetricsQuery` | `<prefix>.metrics.query` | `services/api/src/metrics/routes.ts` | `services/metrics/src/service.ts` |
 * | `MetricsHistory` | `<prefix>.metrics.history` | `services/api/src/metrics/stream.ts` (SSE replay) | `services/metrics/src/service.ts` → `history.ts` |
 * | `MetricsPrometheus` | `<prefix>.metrics.prometheus` | `services/api/src/metrics/routes.ts` | `services/metrics/src/service.ts` → `prometheus.ts` |
 *
 * Every latency is in milliseconds. See `docs/metrics.md` for every field and metric name.
 *
 * @module
 */
import { z } from "zod";
import { defineEvent, defineRpc } from "./define.ts";
import { MetricsWindow } from "./metrics.ts";
import { subject } from "./subjects.ts";

const ms = z.number().nonnegative();
const count = z.number().int().nonnegative();

/** Percentiles of one latency over a window (ms); all 0 when `count` is 0. */
export const LatencySummary = z.object({
  count,
  mean: ms,
  max: ms,
  p50: ms,
  p95: ms,
  p99: ms,
});
/** Percentiles of one latency over a window. */
export type LatencySummary = z.infer<typeof LatencySummary>;

/** Counts of cache outcomes, and the share of each tier among requests with a known outcome. */
export const CacheStats = z.object({
  l1: count,
  l2: count,
  l3: count,
  miss: count,
  none: count,
  /** (l1 + l2 + l3) ÷ (l1 + l2 + l3 + miss); 0 with no known outcome. */
  hit_ratio: z.number().min(0).max(1),
  /** Each tier's share among known outcomes. */
  ratio: z.object({ l1: z.number(), l2: z.number(), l3: z.number(), miss: z.number() }),
});
/** Cache outcomes over a window. */
export type CacheStats = z.infer<typeof CacheStats>;

/** Token throughput over a window. */
export const TokenStats = z.object({
  prompt: count,
  completion: count,
  cached: count,
  /** Completion tokens per second. */
  completion_per_s: z.number().nonnegative(),
  prompt_per_s: z.number().nonnegative(),
});

/** The api's requests over one window. */
export const RequestStats = z.object({
  requests: count,
  /** Requests per second. */
  rate: z.number().nonnegative(),
  errors: count,
  /** Errors per second. */
  error_rate: z.number().nonnegative(),
  cancelled: count,
  streamed: count,
  over_budget: count,
  tokens: TokenStats,
  cache: CacheStats,
  latency_ms: z.object({
    total: LatencySummary,
    overhead: LatencySummary,
    engine: LatencySummary,
    queue: LatencySummary,
    lease: LatencySummary,
    memory: LatencySummary,
    ttft: LatencySummary,
    generation: LatencySummary,
  }),
  /** Requests per endpoint. */
  endpoints: z.record(z.string(), count),
  /** Failed requests per error code. */
  error_codes: z.record(z.string(), count),
});
/** The api's requests over one window. */
export type RequestStats = z.infer<typeof RequestStats>;

/** One worker's (or all workers') sequences over one window. */
export const WorkerStats = z.object({
  generations: count,
  rate: z.number().nonnegative(),
  errors: count,
  tokens: TokenStats,
  latency_ms: z.object({ queue: LatencySummary, ttft: LatencySummary, generation: LatencySummary }),
  /** Busy slots ÷ slots, averaged over the window's samples; 0 without samples. */
  slot_use: z.number().min(0).max(1),
  /** Sequences waiting for a slot: mean and max over the window's samples. */
  queue_depth: z.object({ mean: z.number().nonnegative(), max: count }),
});
/** One worker's sequences over one window. */
export type WorkerStats = z.infer<typeof WorkerStats>;

/** One service's own events over one window. */
export const ServiceStats = z.object({ events: count, errors: count, starts: count });

/** Everything over one window. */
export const WindowStats = z.object({
  window: MetricsWindow,
  /** Seconds the window actually covers (shorter right after the metrics service started). */
  span_s: z.number().nonnegative(),
  api: RequestStats,
  /** All workers together. */
  worker: WorkerStats,
  workers: z.record(z.string(), WorkerStats),
  services: z.record(z.string(), ServiceStats),
});
/** Everything over one window. */
export type WindowStats = z.infer<typeof WindowStats>;

/** A worker's slots as last reported. */
export const WorkerGauge = z.object({
  model: z.string(),
  slots: count,
  busy: count,
  queued: count,
  /** Metrics service clock (epoch ms) when the worker last reported. */
  seen_at: z.number(),
});
/** A worker's slots as last reported. */
export type WorkerGauge = z.infer<typeof WorkerGauge>;

/**
 * Upper bounds (seconds) of the request latency histograms (`atlas_request_*_seconds_bucket`):
 * from half a millisecond (the api's own overhead) to two minutes (a long generation). Fixed, so
 * that histograms of every instance and every day add up in PromQL.
 */
export const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] as const;

/** The content type Prometheus expects of the text exposition format (version 0.0.4). */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Cumulative counters since the metrics service started (for Prometheus `_total`, `_sum`, `_count`, `_bucket`). */
export const MetricTotals = z.object({
  requests: z.record(z.string(), count).describe("by `<endpoint>|<status>`"),
  errors: z.record(z.string(), count).describe("by error code"),
  over_budget: count,
  cache: z.object({ l1: count, l2: count, l3: count, miss: count, none: count }),
  tokens: z.object({ prompt: count, completion: count, cached: count }),
  /**
   * Each request latency as a histogram: sum (seconds), count, and `buckets[i]`, the
   * observations of at most `LATENCY_BUCKETS_S[i]` seconds (cumulative, as Prometheus's `le`).
   */
  latency_s: z.record(z.string(), z.object({ sum: z.number().nonnegative(), count, buckets: z.array(count).optional() })),
  workers: z.record(
    z.string(),
    z.object({ generations: count, errors: count, prompt_tokens: count, completion_tokens: count, cached_tokens: count }),
  ),
  services: z.record(z.string(), z.object({ events: count, errors: count, starts: count })),
});
/** Cumulative counters since the metrics service started. */
export type MetricTotals = z.infer<typeof MetricTotals>;

/** The metrics service's view at one instant. */
export const MetricsSnapshot = z.object({
  /** Grows by one per published snapshot (1, 2, …); a query answers with the last published one's. */
  seq: count,
  /** The metrics service instance (a new one restarts `seq`). */
  instance: z.string(),
  /** Metrics service clock, epoch ms. */
  ts: z.number(),
  interval_ms: count,
  /** Epoch ms when the metrics service started counting (totals are since then). */
  started_at: z.number(),
  windows: z.object({ "10s": WindowStats.optional(), "1m": WindowStats.optional(), "5m": WindowStats.optional() }),
  /** Workers' slots as last reported (workers silent for a while are dropped). */
  workers: z.record(z.string(), WorkerGauge),
  totals: MetricTotals,
});
/** The metrics service's view at one instant. */
export type MetricsSnapshot = z.infer<typeof MetricsSnapshot>;

/** `<prefix>.metrics.snapshot`: published every `ATLAS_METRICS_INTERVAL` ms with every window. */
export const MetricsSnapshotEvent = defineEvent({
  name: "metrics.snapshot",
  subject: (prefix) => subject(prefix, "metrics", "snapshot"),
  data: MetricsSnapshot,
});

/**
 * `<prefix>.metrics.prometheus`: the cluster's metrics in the Prometheus text format, rendered by
 * the metrics service from its own totals and windows (the api appends its instance's gauges).
 */
export const MetricsPrometheus = defineRpc({
  name: "metrics.prometheus",
  subject: (prefix) => subject(prefix, "metrics", "prometheus"),
  request: z.object({}).strict(),
  response: z.object({ text: z.string() }),
});

/** `<prefix>.metrics.query`: the current view, one window (or all when `window` is left out). */
export const MetricsQuery = defineRpc({
  name: "metrics.query",
  subject: (prefix) => subject(prefix, "metrics", "query"),
  request: z.object({ window: MetricsWindow.optional() }).strict(),
  response: MetricsSnapshot,
});

/**
 * Snapshots the metrics service keeps for replay (`MetricsHistory`): 5 min at the default 1 s
 * interval. The most a `MetricsHistory` request may ask for at once.
 */
export const METRICS_HISTORY_CAPACITY = 300;

/**
 * Most bytes of snapshots (as JSON) in one `MetricsHistory` reply, well under NATS's 1 MB
 * message limit: a reply stops before the snapshot that would pass it (it always holds at least
 * one) and says `more`, and the caller asks again after the last one it got.
 */
export const METRICS_HISTORY_MAX_BYTES = 512 * 1024;

/** What a `MetricsHistory` caller asks for. */
export const MetricsHistoryRequest = z
  .object({
    /**
     * The last `seq` the caller has: the reply holds the snapshots after it. `null`: a new start,
     * the newest `limit` snapshots.
     */
    after: count.max(Number.MAX_SAFE_INTEGER).nullable(),
    /** Most snapshots in the reply (fewer when they pass `METRICS_HISTORY_MAX_BYTES`). */
    limit: z.number().int().min(1).max(METRICS_HISTORY_CAPACITY),
  })
  .strict();
/** What a `MetricsHistory` caller asks for. */
export type MetricsHistoryRequest = z.infer<typeof MetricsHistoryRequest>;

/** Fields of every `MetricsHistory` reply: whose series it is and what of it is kept. */
const HistoryRange = {
  /** The metrics service instance that answered: its series is the one `after` was read in. */
  instance: z.string(),
  /** The oldest `seq` kept; null before the first snapshot. */
  oldest: count.nullable(),
  /** The newest `seq` published; null before the first snapshot. */
  latest: count.nullable(),
};

/** The snapshots after `after`, oldest first and contiguous in `seq`. */
export const MetricsHistoryOk = z.object({
  kind: z.literal("ok"),
  ...HistoryRange,
  snapshots: z.array(MetricsSnapshot).max(METRICS_HISTORY_CAPACITY),
  /** More snapshots follow the last one here (ask again after it). */
  more: z.boolean(),
});
/** The snapshots after `after`. */
export type MetricsHistoryOk = z.infer<typeof MetricsHistoryOk>;

/**
 * The snapshots after `after` are not all kept (evicted, or `after` is ahead of this instance's
 * series, as with an id of an earlier instance): the caller starts again, and says so.
 */
export const MetricsHistoryReset = z.object({
  kind: z.literal("reset"),
  ...HistoryRange,
  reason: z.enum(["gone"]),
});
/** The snapshots after `after` are not all kept. */
export type MetricsHistoryReset = z.infer<typeof MetricsHistoryReset>;

/** A `MetricsHistory` reply. */
export const MetricsHistoryReply = z.discriminatedUnion("kind", [MetricsHistoryOk, MetricsHistoryReset]);
/** A `MetricsHistory` reply. */
export type MetricsHistoryReply = z.infer<typeof MetricsHistoryReply>;

/**
 * `<prefix>.metrics.history`: the metrics service's recent snapshots, from the ring it keeps of
 * what it published (`METRICS_HISTORY_CAPACITY`). It owns `seq`, so it owns the history: the api
 * replays from it when an SSE client connects or resumes with `Last-Event-ID`, whichever api
 * instance the client reaches.
 */
export const MetricsHistory = defineRpc({
  name: "metrics.history",
  subject: (prefix) => subject(prefix, "metrics", "history"),
  request: MetricsHistoryRequest,
  response: MetricsHistoryReply,
});
