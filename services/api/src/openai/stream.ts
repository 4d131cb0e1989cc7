/**
 * Runs the sequences of one request (n choices × prompts) and either collects them or streams
 * them as OpenAI chunks. The event stream starts only when the first sequence produced
 * something, so an error that happens before any output (a prompt longer than the context,
 * no worker) is still an ordinary HTTP error with its status.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import type { GenerateEnd, GenerateRequest } from "@atlas/contracts";
import type { FastifyReply } from "fastify";
import { type GenerateOutcome, generate } from "../dispatch.ts";
import { toApiError } from "../errors.ts";
import { SseStream } from "./sse.ts";

/** How the stream's events look for one endpoint. */
export interface StreamShape {
  /** Sent once per choice when the stream starts (chat: the role delta). */
  start?(index: number): unknown;
  delta(index: number, text: string): unknown;
  finish(index: number, end: GenerateEnd): unknown;
  /** The usage event, when the client asked for it. */
  usage?(outcomes: GenerateOutcome[]): unknown;
}

/** Collects every sequence (non-streaming). */
export function collect(bus: Bus, jobs: GenerateRequest[], signal: AbortSignal, requestId: string): Promise<GenerateOutcome[]> {
  return Promise.all(jobs.map((job) => generate(bus, job, { signal, requestId })));
}

/** Streams every sequence to the client; resolves when the stream has ended. */
export async function streamJobs(
  bus: Bus,
  jobs: GenerateRequest[],
  reply: FastifyReply,
  options: { signal: AbortSignal; requestId: string; shape: StreamShape },
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
    outcomes = await Promise.all(
      jobs.map(async (job, index) => {
        const outcome = await generate(bus, job, {
          signal,
          requestId,
          onChunk: (text) => open().send(shape.delta(index, text)),
        });
        open().send(shape.finish(index, outcome.end));
        return outcome;
      }),
    );
  } catch (err) {
    if (sse === undefined) throw err; // nothing sent yet: an ordinary HTTP error
    if (!signal.aborted) {
      reply.log.error({ err, requestId }, "Stream failed after it started");
      sse.fail(toApiError(err, requestId));
    }
    return;
  }
  const s = open();
  if (shape.usage !== undefined) s.send(shape.usage(outcomes));
  s.done();
}
