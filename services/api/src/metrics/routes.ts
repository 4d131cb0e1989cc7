/**
 * The metrics surface of the api:
 *
 * - `GET /v1/atlas/metrics?window=10s|1m|5m`: the current view as JSON (asks `metrics.query`);
 * - `GET /v1/atlas/metrics/stream`: every snapshot as Server-Sent Events (`event: snapshot`,
 *   `id: <seq>`), resumable with `Last-Event-ID` (or `?last_event_id=`) on any api instance: the
 *   metrics service owns the history (`metrics.history`), this api relays it and then the live
 *   snapshots (`stream.ts`, `feed.ts`); a client whose snapshots are gone, or whose series broke,
 *   gets `event: reset` — never a silent gap. `?history=N` starts a new stream with the last N;
 * - `GET /metrics`: Prometheus text format, rendered by the metrics service (`metrics.prometheus`)
 *   with this api instance's own gauges appended (`gauges.ts`);
 * - `GET /dashboard`: a live page fed by the stream (uPlot, served from node_modules).
 *
 * When the metrics service does not answer (or its circuit breaker is open) these answer a 503
 * in OpenAI's error format; nothing here is on the completions' path.
 *
 * The metrics describe the whole cluster (every tenant's traffic, every worker), so with API keys
 * they need an admin key; the stream and the dashboard page also take it as `?access_token=`
 * (`auth.ts`), since a browser's `EventSource` cannot send an `Authorization` header. The
 * Prometheus text also carries the api's own gauges: its circuit breakers and its admission.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BusError } from "@atlas/bus";
import {
  METRICS_HISTORY_CAPACITY,
  MetricsHistory,
  MetricsPrometheus,
  MetricsQuery,
  MetricsWindow,
  PROMETHEUS_CONTENT_TYPE,
} from "@atlas/contracts";
import { fastifySSE, type SSEReplyInterface } from "@fastify/sse";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { requireAdmin } from "../auth.ts";
import { type CircuitBreaker, CircuitOpenError } from "../breaker.ts";
import { apiError, fromZod } from "../errors.ts";
import { Tag } from "../openapi.ts";
import { SnapshotFeed } from "./feed.ts";
import { renderApiGauges } from "./gauges.ts";
import { SnapshotStream } from "./stream.ts";

/** Live snapshots this api caches for its streams (1 min at the default 1 s interval); the history is the metrics service's. */
export const FEED_CAPACITY = 60;

const WindowQuery = z.object({ window: MetricsWindow.default("1m") }).strict();
const StreamQuery = z
  .object({
    history: z.coerce.number().int().min(0).max(METRICS_HISTORY_CAPACITY).default(0),
    last_event_id: z.string().max(32).optional(),
    /** The key, for EventSource clients (checked by `auth.ts`). */
    access_token: z.string().optional(),
  })
  .strict();

/** Registers the metrics routes and the dashboard. */
export async function metricsRoutes(app: FastifyInstance): Promise<void> {
  const { bus, config } = app.deps;
  const feed = new SnapshotFeed({ capacity: FEED_CAPACITY });
  feed.start(bus);
  const breaker = app.guard.breakers.metrics;
  // A snapshot arriving is a sign of life: it closes an open breaker at once.
  feed.onChange(() => {
    if (feed.ageMs < 1000) breaker.recordSuccess();
  });
  // Everything here shows the whole cluster: admin keys only (any caller of an open server).
  app.addHook("onRequest", async (req) => {
    const path = req.url.split("?")[0] ?? "";
    if (path === "/metrics" || path.startsWith("/v1/atlas/metrics") || path === "/dashboard" || path === "/dashboard/") {
      requireAdmin(req, "Metrics show the whole cluster");
    }
  });
  const streams = new Set<SSEReplyInterface>();
  app.addHook("preClose", async () => {
    feed.close();
    for (const s of streams) s.close();
  });
  await app.register(fastifySSE, { heartbeatInterval: 15_000 });

  const doc = (summary: string, querystring?: z.ZodType) => ({
    schema: { tags: [Tag.metrics], summary, ...(querystring === undefined ? {} : { querystring }) },
  });
  app.get("/v1/atlas/metrics", doc("The cluster's metrics over a sliding window (JSON)", WindowQuery), async (req) => {
    const q = parseQuery(WindowQuery, req.query);
    const s = await ask(breaker, () => bus.call(MetricsQuery, { window: q.window }, { timeoutMs: 2000, requestId: req.id }));
    return {
      object: "atlas.metrics",
      window: q.window,
      seq: s.seq,
      instance: s.instance,
      ts: s.ts,
      interval_ms: s.interval_ms,
      started_at: s.started_at,
      latency_budget_ms: config.ATLAS_LATENCY_BUDGET_MS,
      stats: s.windows[q.window],
      workers: s.workers,
      totals: s.totals,
    };
  });

  app.get("/metrics", doc("The cluster's metrics in the Prometheus text format"), async (req, reply) => {
    // The metrics service renders the cluster's families; this api adds its own instance's.
    const { text } = await ask(breaker, () => bus.call(MetricsPrometheus, {}, { timeoutMs: 2000, requestId: req.id }));
    const { guard } = app;
    const own = renderApiGauges({
      instance: bus.instance,
      breakers: guard.breakers.snapshot(),
      admission: { running: guard.admission.running, queued: guard.admission.queued, max: guard.admission.options.max },
      refused: { ...prefixed("admission_", guard.admission.refused), ...prefixed("rate_limit_", guard.refused.rate_limit) },
    });
    return reply.type(PROMETHEUS_CONTENT_TYPE).send(text + own);
  });

  app.get(
    "/v1/atlas/metrics/stream",
    { sse: { kind: "only" }, ...doc("Every metrics snapshot as Server-Sent Events", StreamQuery) },
    async (req, reply) => {
      const q = parseQuery(StreamQuery, req.query);
      const sse = reply.sse;
      const stream = new SnapshotStream(
        feed,
        sse,
        (r) => ask(breaker, () => bus.call(MetricsHistory, r, { timeoutMs: 2000, requestId: req.id })),
        { lastEventId: sse.lastEventId ?? q.last_event_id, history: q.history, requestId: req.id },
      );
      // Where the client starts comes from the metrics service: a 503 here when it does not answer.
      await stream.open();
      sse.keepAlive();
      sse.sendHeaders();
      streams.add(sse);
      sse.onClose(() => streams.delete(sse));
      stream.start();
    },
  );

  await dashboardRoutes(app);
}

/** Asks the metrics service, through its breaker; a 503 when it does not answer. */
async function ask<T>(breaker: CircuitBreaker, call: () => Promise<T>): Promise<T> {
  try {
    return await breaker.run(call);
  } catch (err) {
    const open = err instanceof CircuitOpenError;
    if (open || (err instanceof BusError && (err.code === "unavailable" || err.code === "timeout" || err.code === "overloaded"))) {
      throw apiError("metrics_unavailable", undefined, {
        retryAfterS: open ? Math.max(2, Math.ceil(err.retryAfterMs / 1000)) : 2,
        cause: err,
      });
    }
    throw err;
  }
}

function prefixed(prefix: string, counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).map(([k, v]) => [`${prefix}${k}`, v]));
}

function parseQuery<S extends z.ZodType>(schema: S, query: unknown): z.infer<S> {
  const r = schema.safeParse(query ?? {});
  if (!r.success) throw fromZod(r.error);
  return r.data;
}

/** The dashboard page, its script and the chart library, read once from disk. */
async function dashboardRoutes(app: FastifyInstance): Promise<void> {
  const here = join(dirname(fileURLToPath(import.meta.url)), "dashboard");
  const require = createRequire(import.meta.url);
  const files: Array<[string, string, string, string]> = [
    ["/dashboard", join(here, "index.html"), "text/html; charset=utf-8", "no-cache"],
    ["/dashboard/", join(here, "index.html"), "text/html; charset=utf-8", "no-cache"],
    ["/dashboard/dashboard.js", join(here, "dashboard.js"), "text/javascript; charset=utf-8", "no-cache"],
    ["/dashboard/dashboard.css", join(here, "dashboard.css"), "text/css; charset=utf-8", "no-cache"],
    [
      "/dashboard/vendor/uPlot.iife.min.js",
      require.resolve("uplot/dist/uPlot.iife.min.js"),
      "text/javascript; charset=utf-8",
      "max-age=3600",
    ],
    ["/dashboard/vendor/uPlot.min.css", require.resolve("uplot/dist/uPlot.min.css"), "text/css; charset=utf-8", "max-age=3600"],
  ];
  for (const [url, path, type, cache] of files) {
    const body = await readFile(path);
    // Static files of the page, not API operations: left out of the OpenAPI document.
    app.get(url, { schema: { hide: true } }, async (_req, reply) =>
      reply
        .type(type)
        .header("cache-control", cache)
        .header("x-content-type-options", "nosniff")
        // The page may be opened with ?access_token=: never send its URL on as a Referer.
        .header("referrer-policy", "no-referrer")
        .header(
          "content-security-policy",
          "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )
        .send(body),
    );
  }
}
