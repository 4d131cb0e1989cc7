/**
 * `buildApp`: the api's fastify instance, without listening, so tests use `app.inject()` or
 * listen on an ephemeral port themselves.
 *
 * @module
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import { authPlugin } from "./auth.ts";
import { ModelCatalog } from "./catalog.ts";
import { Credits } from "./credits.ts";
import type { AppDeps } from "./deps.ts";
import { type ApiError, apiError, toApiError } from "./errors.ts";
import { installGuard } from "./guard.ts";
import { memoryRoutes } from "./memory/routes.ts";
import { installRequestMetrics } from "./metrics/recorder.ts";
import { metricsRoutes } from "./metrics/routes.ts";
import { chatRoutes } from "./openai/chat.ts";
import { completionRoutes } from "./openai/completions.ts";
import { modelRoutes } from "./openai/models.ts";
import { openapiPlugin } from "./openapi.ts";
import { lazyRequestLogger } from "./request_log.ts";
import { healthRoutes } from "./routes/health.ts";
import { workerRoutes } from "./routes/workers.ts";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Builds the HTTP app over a connected bus. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // req.log is made when a request first logs (request_log.ts), not for every request.
    childLoggerFactory: lazyRequestLogger,
    bodyLimit: deps.config.ATLAS_BODY_LIMIT_BYTES,
    // Session ids in memory URLs are up to 128 characters (fastify's default limit is 100).
    routerOptions: { maxParamLength: 256 },
    // Keep the client's id when it is sane; otherwise make one.
    genReqId: (req) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && REQUEST_ID.test(given) ? given : `req_${crypto.randomUUID().replaceAll("-", "")}`;
    },
    return503OnClosing: true,
    forceCloseConnections: "idle",
    // Errors the router raises before any hook runs (a malformed or too long URL): same format,
    // same x-request-id as every other answer.
    frameworkErrors: (err, req, reply) => {
      reply.header("x-request-id", req.id);
      const code = (err as { code?: string }).code;
      if (code === "FST_ERR_BAD_URL") {
        return sendError(reply, apiError("invalid_url"));
      }
      if (code === "FST_ERR_MAX_PARAM_LENGTH") {
        return sendError(reply, apiError("uri_too_long"));
      }
      sendError(reply, toApiError(err, req.id));
    },
  });
  app.decorate("deps", deps);
  const catalog = new ModelCatalog(deps.bus);
  app.decorate("catalog", catalog);
  app.decorate(
    "credits",
    new Credits(deps.config.ATLAS_SLOT_CREDITS, { slotsOf: (model) => catalog.list().find((m) => m.id === model)?.slots }),
  );
  app.addHook("onClose", async () => catalog.close());
  app.addHook("onRequest", (req, reply, done) => {
    reply.header("x-request-id", req.id);
    done();
  });
  app.setErrorHandler((err, req, reply) => {
    const e = toApiError(err, req.id);
    if (e.status >= 500) req.log.error({ err, requestId: req.id }, "Request failed");
    else req.log.debug({ err: e.message, requestId: req.id }, "Request refused");
    sendError(reply, e);
  });
  app.setNotFoundHandler((req, reply) => {
    sendError(reply, apiError("unknown_url", { method: req.method, path: req.url.split("?")[0] ?? "" }));
  });
  installRequestMetrics(app);
  // Route schemas, body validation and the OpenAPI document: before the routes it describes.
  await app.register(openapiPlugin);
  await app.register(authPlugin);
  // Rate limits, admission and circuit breakers (docs/security.md); after auth: limits are per tenant.
  installGuard(app);
  await app.register(healthRoutes);
  await app.register(modelRoutes);
  await app.register(chatRoutes);
  await app.register(completionRoutes);
  await app.register(memoryRoutes);
  await app.register(workerRoutes);
  await app.register(metricsRoutes);
  return app;
}

/** Sends an {@link ApiError} with its status, `Retry-After` and extra headers. */
export function sendError(reply: import("fastify").FastifyReply, e: ApiError): void {
  if (e.retryAfterS !== undefined) reply.header("retry-after", String(Math.max(1, Math.ceil(e.retryAfterS))));
  for (const [k, v] of Object.entries(e.headers)) reply.header(k, v);
  void reply.code(e.status).type("application/json; charset=utf-8").send(e.toBody());
}

export type { AppDeps } from "./deps.ts";
