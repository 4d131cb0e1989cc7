/**
 * Records every request on the generation endpoints as one `request` metric event, published
 * on `<prefix>.metrics.events.api` (contract: `MetricEvents` in `libs/contracts/src/metrics.ts`;
 * handler: `services/metrics/src/service.ts`).
 *
 * How: an `onRequest` hook starts a trace on the request; `services/api/src/openai/stream.ts`
 * adds the sequences' outcomes ({@link traceOutcomes}), the time spent getting leases
 * ({@link traceLease}) and the error of a stream that failed after it started
 * ({@link traceError}); errors thrown to fastify are caught by an `onError` hook; when the
 * response closes (finished, or the client went away) the event is built and published.
 * Recording is O(1) per request and never waits on the network: `Bus.publish` only buffers.
 *
 * @module
 */
import { EventBatcher } from "@atlas/bus";
import {
  type CacheOutcome,
  METRIC_BATCH_MAX,
  METRIC_BATCH_MS,
  MetricEvents,
  type MetricStatus,
  type RequestEvent,
  ServiceName,
} from "@atlas/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { GenerateOutcome } from "../dispatch.ts";
import { type ApiError, toApiError } from "../errors.ts";
import { cacheOutcome as firstCacheOutcome, knownModelId } from "../openai/common.ts";

/** What the api learns about one request while it runs. */
export interface RequestTrace {
  /** `performance.now()` when the request arrived. */
  readonly startedAt: number;
  readonly endpoint: string;
  /** The sequences' outcomes (end message, lease), once all succeeded. */
  readonly outcomes: GenerateOutcome[];
  /** Longest wait for leases among the request's groups of sequences, in ms. */
  leaseMs: number;
  /** Time spent recalling session memory. */
  memoryMs: number;
  /** The error the client was given, if any. */
  error: ApiError | null;
}

/** Routes whose requests are recorded, and their endpoint name in events. */
const ENDPOINTS: Readonly<Record<string, string>> = {
  "/v1/chat/completions": "chat.completions",
  "/v1/completions": "completions",
};

/** Adds the time spent recalling session memory to the request's trace. */
export function traceMemory(req: FastifyRequest, ms: number): void {
  if (req.atlasTrace !== null && req.atlasTrace !== undefined) req.atlasTrace.memoryMs += ms;
}

/** Adds the sequences' outcomes to the request's trace and returns them (no-op off the generation endpoints). */
export function traceOutcomes(req: FastifyRequest, outcomes: GenerateOutcome[]): GenerateOutcome[] {
  req.atlasTrace?.outcomes.push(...outcomes);
  return outcomes;
}

/** Notes how long a group of the request's sequences waited for its leases. */
export function traceLease(req: FastifyRequest, ms: number): void {
  if (req.atlasTrace !== null && req.atlasTrace !== undefined) req.atlasTrace.leaseMs = Math.max(req.atlasTrace.leaseMs, ms);
}

/** Notes the error a stream ended with after it started (its HTTP status was already 200); returns it. */
export function traceError(req: FastifyRequest, err: ApiError): ApiError {
  if (req.atlasTrace !== null && req.atlasTrace !== undefined) req.atlasTrace.error ??= err;
  return err;
}

/**
 * Installs the hooks on the root app (call before the routes are registered) and announces the
 * api's start as a `service` event.
 */
export function installRequestMetrics(app: FastifyInstance): void {
  const { bus, config } = app.deps;
  const budgetMs = config.ATLAS_LATENCY_BUDGET_MS;
  // One message per METRIC_BATCH_MS for all of this process's events, not one per request.
  const events = new EventBatcher(bus, MetricEvents, {
    params: { service: ServiceName.api },
    intervalMs: METRIC_BATCH_MS,
    maxItems: METRIC_BATCH_MAX,
  });
  app.addHook("onClose", async () => events.close());
  app.decorateRequest("atlasTrace", null);

  app.addHook("onRequest", (req, reply, done) => {
    const endpoint = req.method === "POST" ? ENDPOINTS[req.routeOptions.url ?? ""] : undefined;
    if (endpoint !== undefined) {
      const trace: RequestTrace = { startedAt: performance.now(), endpoint, outcomes: [], leaseMs: 0, memoryMs: 0, error: null };
      req.atlasTrace = trace;
      reply.raw.once("close", () => {
        try {
          events.push(requestEvent(req, reply, trace, { budgetMs, instance: bus.instance, modelOf: (name) => knownModelId(app, name) }));
        } catch (err) {
          req.log.warn({ err }, "Cannot record the request's metrics");
        }
      });
    }
    done();
  });

  app.addHook("onError", (req, _reply, err, done) => {
    if (req.atlasTrace !== null) req.atlasTrace.error ??= toApiError(err, req.id);
    done();
  });

  events.push({ type: "service", service: ServiceName.api, instance: bus.instance, ts: Date.now(), event: "started" });
}

/** Builds the event of a request whose response just closed. */
export function requestEvent(
  req: FastifyRequest,
  reply: FastifyReply,
  trace: RequestTrace,
  options: {
    budgetMs: number;
    instance: string;
    /** The served model id a `model` names (an alias resolves to its model), when the api knows that model. */
    modelOf?: (name: string) => string | undefined;
  },
): RequestEvent {
  const total = performance.now() - trace.startedAt;
  const res = reply.raw;
  const status: MetricStatus = !res.writableFinished ? "cancelled" : trace.error !== null || res.statusCode >= 400 ? "error" : "ok";
  let queue = 0;
  let ttft = Number.POSITIVE_INFINITY;
  let generation = 0;
  let engine = 0;
  let prompt = 0;
  let completion = 0;
  let cached = 0;
  const workers: string[] = [];
  for (const { end: e } of trace.outcomes) {
    const t = e.timings;
    queue = Math.max(queue, t.queue_ms);
    ttft = Math.min(ttft, t.ttft_ms);
    generation = Math.max(generation, t.generation_ms);
    engine = Math.max(engine, t.queue_ms + t.ttft_ms + t.generation_ms);
    prompt += e.usage.prompt_tokens;
    completion += e.usage.completion_tokens;
    cached += e.usage.cached_tokens;
    if (!workers.includes(e.worker_id)) workers.push(e.worker_id);
  }
  const overhead = Math.max(0, total - engine);
  const body = req.body as { model?: unknown; stream?: unknown } | undefined;
  return {
    type: "request",
    service: ServiceName.api,
    instance: options.instance,
    ts: Date.now(),
    request_id: req.id,
    endpoint: trace.endpoint,
    // The model's id when the api knows it (the metrics' `model` label), else the name as asked.
    model: typeof body?.model === "string" ? (options.modelOf?.(body.model) ?? body.model).slice(0, 256) : null,
    stream: body?.stream === true,
    status,
    http_status: res.statusCode,
    error_code: status === "error" ? (trace.error?.code ?? `http_${res.statusCode}`) : null,
    workers,
    sequences: trace.outcomes.length,
    tokens: { prompt, completion, cached },
    cache: cacheOutcome(trace.outcomes),
    latency_ms: {
      queue,
      lease: trace.leaseMs,
      memory: trace.memoryMs,
      ttft: Number.isFinite(ttft) ? ttft : 0,
      generation,
      engine,
      total,
      overhead,
    },
    over_budget: status === "ok" && overhead > options.budgetMs,
  };
}

/**
 * The cache outcome as far as it is known: no sequence finished, nothing is known (`none`); no
 * prompt token was reused, a `miss`; reused tokens come from L1 (the slot) unless the lease says
 * the session's state was restored from L2 or L3.
 */
function cacheOutcome(outcomes: readonly GenerateOutcome[]): CacheOutcome {
  return outcomes.length === 0 ? "none" : firstCacheOutcome(outcomes[0]).outcome;
}
