/**
 * Runs the sequences of one request (n choices × prompts) and either collects them or streams
 * them as OpenAI chunks. The event stream starts only when the first sequence produced
 * something, so an error that happens before any output (a prompt longer than the context,
 * no worker) is still an ordinary HTTP error with its status.
 *
 * @module
 */

import type { GenerateChunk, GenerateEnd, GenerateRequest } from "@atlas/contracts";
import { DEFAULT_CACHE_STRATEGY } from "@atlas/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { markDegraded } from "../degraded.ts";
import { type GenerateOutcome, type Placement, runSequences } from "../dispatch.ts";
import { toApiError } from "../errors.ts";
import { traceError, traceLease, traceOutcomes } from "../metrics/recorder.ts";
import type { AtlasOptions } from "./schemas.ts";
import { SseStream } from "./sse.ts";

/** How the stream's events look for one endpoint. */
export interface StreamShape {
  /** Sent once per choice when the stream starts (chat: the role delta). */
  start?(index: number): unknown;
  /** A chunk of one choice's text, with its tokens' logprobs when the request asked for them. */
  delta(index: number, chunk: GenerateChunk): unknown;
  finish(index: number, end: GenerateEnd): unknown;
  /** The usage event, when the client asked for it. */
  usage?(outcomes: GenerateOutcome[]): unknown;
}

/** Where a request's sequences go: its tenant, session and cache options. */
export function placementOf(req: FastifyRequest, atlas: AtlasOptions | undefined): Placement {
  return {
    tenant: (req as FastifyRequest & { tenant?: string }).tenant ?? "default",
    sessionId: atlas?.session_id,
    strategy: atlas?.cache_strategy ?? DEFAULT_CACHE_STRATEGY,
    batchSize: atlas?.batch_size ?? 1,
  };
}

function onDegraded(reply: FastifyReply): () => void {
  return () => markDegraded(reply, "scheduler");
}

/** Collects every sequence (non-streaming). */
export function collect(
  app: FastifyInstance,
  reply: FastifyReply,
  jobs: GenerateRequest[],
  options: { signal: AbortSignal; requestId: string; placement: Placement },
): Promise<GenerateOutcome[]> {
  const onLease = (ms: number) => traceLease(reply.request, ms);
  return runSequences(app.deps.bus, jobs, {
    ...options,
    onDegraded: onDegraded(reply),
    onLease,
    breakers: app.guard.breakers,
    credits: app.credits,
  }).then((o) => traceOutcomes(reply.request, o));
}

/** Streams every sequence to the client; resolves when the stream has ended. */
export async function streamJobs(
  app: FastifyInstance,
  reply: FastifyReply,
  jobs: GenerateRequest[],
  options: { signal: AbortSignal; requestId: string; placement: Placement; shape: StreamShape },
): Promise<void> {
  const { shape, signal, requestId } = options;
  let sse: SseStream | undefined;
  const open = () => {
    if (sse !== undefined) return sse;
    sse = new SseStream(reply);
    if (shape.start !== undefined) for (let i = 0; i < jobs.length; i++) sse.send(shape.start(i));
    return sse;
  };
  let outcomes: GenerateOutcome[];
  try {
    outcomes = await runSequences(app.deps.bus, jobs, {
      signal,
      requestId,
      placement: options.placement,
      onDegraded: onDegraded(reply),
      breakers: app.guard.breakers,
      credits: app.credits,
      onLease: (ms) => traceLease(reply.request, ms),
      onChunk: (index, chunk) => open().send(shape.delta(index, chunk)),
      onEnd: (index, outcome) => open().send(shape.finish(index, outcome.end)),
    });
  } catch (err) {
    if (sse === undefined) throw err; // nothing sent yet: an ordinary HTTP error
    if (signal.aborted) sse.abort();
    else {
      reply.log.error({ err, requestId }, "Stream failed after it started");
      sse.fail(traceError(reply.request, toApiError(err, requestId)));
    }
    return;
  }
  const s = open();
  traceOutcomes(reply.request, outcomes);
  if (shape.usage !== undefined) s.send(shape.usage(outcomes));
  s.done();
}
