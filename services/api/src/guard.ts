/**
 * Wires the api's limits into fastify (the mechanisms are in `limits.ts`, the breakers in
 * `downstream.ts`):
 *
 * - every request under `/v1/` counts against the global and its session's request rate
 *   (a `preHandler` hook, so the body's `atlas.session_id` is known) → 429 + `Retry-After`;
 * - the generation routes then call {@link chargeTokens} (a token reservation, settled to the
 *   real usage when the answer succeeded) and {@link admit} (the `ATLAS_MAX_CONCURRENT` places
 *   and their bounded queue → 503 + `Retry-After`);
 * - every refusal is an audit record.
 *
 * @module
 */
import { sessionKey } from "@atlas/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AuditEvent, audit } from "./audit.ts";
import { markDegraded } from "./degraded.ts";
import { Downstream } from "./downstream.ts";
import { type ApiError, apiError } from "./errors.ts";
import { Admission, AdmissionError, RateLimiter, type Refusal, type Reservation } from "./limits.ts";
import { SessionId } from "./openai/schemas.ts";
import { clusterLimits } from "./shared_limits.ts";

/** The api's limits and breakers. */
export interface Guard {
  limiter: RateLimiter;
  admission: Admission;
  breakers: Downstream;
  /** Refusals since start, for status and metrics. */
  refused: { rate_limit: Record<string, number> };
}

/** The rate-limit key of a request: its session within its tenant, else its tenant. */
export function limitKey(tenant: string, sessionId: string | undefined): string {
  return sessionId === undefined ? tenant : sessionKey(tenant, sessionId);
}

/** The session a request names, in its body (`atlas.session_id`) or its URL (`:session_id`). */
export function sessionOf(req: FastifyRequest): string | undefined {
  const body = req.body as { atlas?: { session_id?: unknown } } | undefined;
  const fromBody = body !== null && typeof body === "object" && !Array.isArray(body) ? body.atlas?.session_id : undefined;
  const fromUrl = (req.params as { session_id?: unknown } | undefined)?.session_id;
  for (const candidate of [fromBody, fromUrl]) {
    const r = SessionId.safeParse(candidate);
    if (r.success) return r.data;
  }
  return undefined;
}

/** Routes outside the request rate limit: probes, scrapes and the dashboard's static files. */
function limited(url: string): boolean {
  return url.startsWith("/v1/");
}

/** Decorates the app with its guard and installs the request-rate hook. Call before the routes. */
export function installGuard(app: FastifyInstance): void {
  const { config, bus, log } = app.deps;
  // The global limits hold across api instances (docs/adr/0017-cluster-rate-limits.md).
  const shared = clusterLimits({ bus, config, log });
  const guard: Guard = {
    limiter: new RateLimiter({
      rpm: config.ATLAS_RATE_LIMIT_RPM,
      tpm: config.ATLAS_RATE_LIMIT_TPM,
      sessionRpm: config.ATLAS_SESSION_RATE_LIMIT_RPM,
      sessionTpm: config.ATLAS_SESSION_RATE_LIMIT_TPM,
      ...(shared === undefined ? {} : { shared }),
    }),
    admission: new Admission({
      max: config.ATLAS_MAX_CONCURRENT,
      queue: config.ATLAS_ADMISSION_QUEUE,
      waitMs: config.ATLAS_ADMISSION_WAIT_MS,
    }),
    breakers: new Downstream({ bus, config, log }),
    refused: { rate_limit: {} },
  };
  app.decorate("guard", guard);
  app.addHook("onClose", async () => {
    guard.breakers.close();
    await shared?.close();
  });
  if (guard.limiter.enabled) {
    log.info(
      {
        rpm: config.ATLAS_RATE_LIMIT_RPM,
        tpm: config.ATLAS_RATE_LIMIT_TPM,
        session_rpm: config.ATLAS_SESSION_RATE_LIMIT_RPM,
        session_tpm: config.ATLAS_SESSION_RATE_LIMIT_TPM,
      },
      "Rate limits are on",
    );
  }
  app.addHook("preHandler", async (req) => {
    if (!guard.limiter.enabled || !limited(req.url)) return;
    const session = sessionOf(req);
    const refusal = await guard.limiter.request(limitKey(req.tenant, session));
    if (refusal !== undefined) throw rateLimited(req, guard, refusal, session);
  });
}

function rateLimited(req: FastifyRequest, guard: Guard, r: Refusal, session: string | undefined): ApiError {
  const key = `${r.scope}_${r.kind}`;
  guard.refused.rate_limit[key] = (guard.refused.rate_limit[key] ?? 0) + 1;
  audit(req, {
    event: AuditEvent.rateLimited,
    outcome: "refused",
    session: session ?? null,
    detail: { scope: r.scope, kind: r.kind, limit_per_minute: r.limitPerMinute, retry_after_s: r.retryAfterS },
  });
  const who = r.scope === "global" ? "this server" : session === undefined ? "your API key" : `session "${session}"`;
  const what = r.kind === "requests" ? "requests" : "tokens";
  const params = { who, limit: r.limitPerMinute, what, retryAfterS: r.retryAfterS };
  return apiError(r.kind === "requests" ? "rate_limit_exceeded" : "tokens_rate_limit_exceeded", params, { retryAfterS: r.retryAfterS });
}

/**
 * Reserves a generation request's tokens; settles them to the real usage when the response
 * closes after a successful answer (`actual` is read then). Throws the 429 when refused.
 */
export async function chargeTokens(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  options: { session: string | undefined; tokens: number; actual: () => number | undefined },
): Promise<void> {
  const { limiter } = app.guard;
  if (limiter.limits.tpm <= 0 && limiter.limits.sessionTpm <= 0) return;
  const r = await limiter.reserve(limitKey(req.tenant, options.session), Math.max(1, Math.ceil(options.tokens)));
  if (!("settle" in r)) throw rateLimited(req, app.guard, r, options.session);
  const reservation: Reservation = r;
  reply.raw.once("close", () => {
    const actual = options.actual();
    if (actual !== undefined) reservation.settle(actual);
  });
}

/** Waits for an admission place (released when the response closes); throws the 503 when refused. */
export async function admit(app: FastifyInstance, req: FastifyRequest, reply: FastifyReply, signal: AbortSignal): Promise<void> {
  let release: () => void;
  try {
    release = await app.guard.admission.enter(signal);
  } catch (err) {
    if (!(err instanceof AdmissionError)) throw err;
    audit(req, {
      event: AuditEvent.admissionRefused,
      outcome: "refused",
      session: sessionOf(req) ?? null,
      detail: { reason: err.reason, running: app.guard.admission.running, queued: app.guard.admission.queued },
    });
    throw apiError("server_overloaded", undefined, { retryAfterS: err.reason === "queue_full" ? 1 : 2 });
  }
  if (reply.raw.destroyed || reply.raw.writableFinished) release();
  else reply.raw.once("close", release);
}

/** What {@link guardGeneration} needs to know of a generation request. */
export interface GenerationAsk {
  /** The served model's context size, in tokens (0: unknown). */
  ctxSize: number;
  /** `max_tokens` as given (per choice), and the argument's name for the 400. */
  maxTokens: number | null | undefined;
  maxTokensParam: string;
  /** What the request reserves per sequence when it gives no `max_tokens`. */
  defaultMaxTokens: number;
  /** Sequences the request runs (prompts × n). */
  sequences: number;
  /** Estimated prompt tokens of the whole request. */
  promptTokens: number;
  session: string | undefined;
  /** The real usage once the answer succeeded (read when the response closes), else undefined. */
  actual: () => number | undefined;
  signal: AbortSignal;
}

/**
 * The checks and limits a generation request passes before it runs, in this order: `max_tokens`
 * within the context (400), the token rate limits (429), admission (503). Marks the answer
 * degraded when the metrics service is out (its breaker is not closed).
 */
export async function guardGeneration(app: FastifyInstance, req: FastifyRequest, reply: FastifyReply, ask: GenerationAsk): Promise<void> {
  if (ask.maxTokens != null && ask.ctxSize > 0 && ask.maxTokens >= ask.ctxSize) {
    const message = `${ask.maxTokensParam} is too large: ${ask.maxTokens}. This model's context length is ${ask.ctxSize} tokens, which must hold the prompt as well.`;
    throw apiError("invalid_value", { message }, { param: ask.maxTokensParam });
  }
  const perSequence = ask.maxTokens ?? ask.defaultMaxTokens;
  await chargeTokens(app, req, reply, { session: ask.session, tokens: ask.promptTokens + perSequence * ask.sequences, actual: ask.actual });
  await admit(app, req, reply, ask.signal);
  if (app.guard.breakers.metrics.state !== "closed") markDegraded(reply, "metrics");
}
