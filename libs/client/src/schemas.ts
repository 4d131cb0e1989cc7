/**
 * The HTTP shapes `@atlas/client` sends and parses, as zod schemas from `@atlas/contracts`; every
 * type here is the `z.infer` of its schema.
 *
 * The `atlas` extension and the memory routes' bodies are the api's own, defined once in
 * `@atlas/contracts` (`libs/contracts/src/atlas_http.ts`); the rest are built here from contracts
 * building blocks (the api declares no zod schema for its status and metrics views).
 *
 * @module
 */
import {
  HealthCheck,
  HealthState,
  MetricsHistoryReset,
  MetricsSnapshot,
  MetricsWindow,
  MetricTotals,
  SchedulerDrain,
  WindowStats,
  WorkerGauge,
} from "@atlas/contracts";
import { z } from "zod";

const count = z.number().int().nonnegative();

/** An error in OpenAI's format, as every ATLAS endpoint answers one (`code`: docs/api.md, "Errors"). */
export const ErrorBody = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
});
/** An error in OpenAI's format. */
export type ErrorBody = z.infer<typeof ErrorBody>;

// ── Session memory ────────────────────────────────────────────────────────────────────────────

export {
  AppendedLayer,
  AppendInput,
  AtlasOptions,
  AtlasResponse,
  DeletedSession,
  DocumentInput,
  LayerInput,
  MEMORY_LIST_MAX,
  SessionDocument,
  SessionId,
  SessionList,
  SessionObject,
  TenantId,
} from "@atlas/contracts";

// ── Status, workers ───────────────────────────────────────────────────────────────────────────

/** One service instance in `GET /v1/atlas/status` (admin keys). */
export const InstanceStatus = z.object({
  instance: z.string(),
  version: z.string(),
  state: HealthState,
  healthy: z.boolean(),
  uptime_s: z.number().nullable(),
  checks: z.record(z.string(), HealthCheck),
  details: z.record(z.string(), z.unknown()).optional(),
  error: z.string().optional(),
});
/** One service instance. */
export type InstanceStatus = z.infer<typeof InstanceStatus>;

/**
 * `GET /v1/atlas/status`: `status`, `version` and `checked_at` for every key; the services, NATS,
 * the pool and the api's own state (`breakers`, `admission`…) for admin keys only.
 */
export const ClusterStatus = z
  .object({
    status: HealthState,
    version: z.string(),
    checked_at: z.iso.datetime(),
    atlas_enabled: z.boolean().optional(),
    nats: z.object({ connected: z.boolean(), server_version: z.string().nullable(), rtt_ms: z.number().nullable() }).optional(),
    services: z.record(z.string(), z.array(InstanceStatus)).optional(),
    missing: z.array(z.string()).optional(),
    scheduler: z.record(z.string(), z.unknown()).nullable().optional(),
    /** The answering api instance: its breakers, slot credits, admission and rate limits. */
    api: z.record(z.string(), z.unknown()).optional(),
  })
  .loose();
/** The cluster's status. */
export type ClusterStatus = z.infer<typeof ClusterStatus>;

/** `POST /v1/atlas/workers/{id}/drain` (202): the scheduler's answer, `SchedulerDrain`'s reply. */
export const DrainResult = SchedulerDrain.response;
/** A drained worker. */
export type DrainResult = z.infer<typeof DrainResult>;

// ── Metrics ───────────────────────────────────────────────────────────────────────────────────

/** `GET /v1/atlas/metrics?window=`: the current view over one window. */
export const MetricsView = z.object({
  object: z.literal("atlas.metrics"),
  window: MetricsWindow,
  seq: count,
  instance: z.string(),
  ts: z.number(),
  interval_ms: count,
  started_at: z.number(),
  latency_budget_ms: z.number(),
  stats: WindowStats.optional(),
  workers: z.record(z.string(), WorkerGauge),
  totals: MetricTotals,
});
/** The current metrics view. */
export type MetricsView = z.infer<typeof MetricsView>;

/**
 * The stream's `event: reset` (docs/metrics.md, "Resuming the stream"): the snapshots after
 * `last_event_id` are gone (`gone`), the id is not one (`unknown`), or the metrics service
 * restarted (`discontinuity`); the stream goes on from a new start.
 */
export const MetricsResetData = z.object({
  reason: z.enum([...MetricsHistoryReset.shape.reason.options, "unknown", "discontinuity"]),
  last_event_id: z.string().nullable(),
  oldest: count.nullable(),
  latest: count.nullable(),
});
/** The stream's `event: reset`. */
export type MetricsResetData = z.infer<typeof MetricsResetData>;

export { MetricsSnapshot, MetricsWindow };
