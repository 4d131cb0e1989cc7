/**
 * Handler side of a stream: runs the handler and publishes its chunks and end (or error) to the
 * caller's inbox as coalesced frames (see `frames.ts`).
 *
 * - The cancel subject is a token of the bus's shared inbox, named in the first frame; a message
 *   there fires the handler's `signal`. The caller's liveness probes of this handler are answered
 *   by the mux while the stream runs, `gone` after.
 * - The handler probes the caller's inbox with a heartbeat request; a `gone` answer (the call is
 *   finished or unknown) or no responders (the caller's connection is gone) fires the `signal`
 *   too, so a vanished caller never keeps a slot busy.
 * - A relayed request names the caller's inbox in `Atlas-Reply-To`; frames go there, not to the
 *   NATS reply subject (which belongs to the relay).
 *
 * @module
 */
import type { StreamContract } from "@atlas/contracts";
import type { Msg } from "@nats-io/transport-node";
import type { z } from "zod";
import { DEFAULT_IDLE_MS } from "./caller.ts";
import { decodeRequest, Header } from "./codec.ts";
import type { BusCore } from "./core.ts";
import type { EndpointRecord } from "./discovery.ts";
import { BusError } from "./errors.ts";
import {
  DEFAULT_FLUSH_MS,
  DEFAULT_MAX_BATCH_BYTES,
  DEFAULT_START_DELAY_MS,
  type FrameWindow,
  FrameWriter,
  MAX_FLUSH_MS,
} from "./frames.ts";
import { probe } from "./mux.ts";
import type { StreamContext, StreamServeOptions } from "./types.ts";

/** The caller's inbox of a stream request: `Atlas-Reply-To` when relayed, else the reply subject. */
export function replyOf(msg: Msg): string | undefined {
  return msg.headers?.get(Header.replyTo) || msg.reply;
}

/** The batching window for one request: the caller's `Atlas-Flush-Ms` if it asked, else the handler's options. */
export function frameWindow(msg: Msg, options: StreamServeOptions): FrameWindow {
  const asked = msg.headers?.get(Header.flush);
  const askedMs = asked ? Number(asked) : Number.NaN;
  return {
    flushMs: Number.isFinite(askedMs) ? Math.min(MAX_FLUSH_MS, Math.max(0, askedMs)) : (options.flushMs ?? DEFAULT_FLUSH_MS),
    maxBatchBytes: Math.max(1, options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES),
    startDelayMs: Math.max(0, options.startDelayMs ?? DEFAULT_START_DELAY_MS),
  };
}

/** Handler side of a stream; resolves when the handler and its frames are done. */
export async function serveStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
  bus: BusCore,
  contract: StreamContract<P, Req, Chunk, End>,
  handler: (req: z.infer<Req>, ctx: StreamContext<z.input<Chunk>>) => Promise<z.input<End>>,
  msg: Msg,
  controller: AbortController,
  record: EndpointRecord,
  options: StreamServeOptions = {},
): Promise<void> {
  const reply = replyOf(msg);
  if (reply === undefined) return;
  const started = process.hrtime.bigint();
  const requestId = msg.headers?.get(Header.requestId) || crypto.randomUUID();
  const nc = bus.nc;
  const mux = bus.streamMux();
  /** Set when the caller cancelled or is gone: nothing more is sent to it. */
  let callerLeft = false;
  const leave = (reason: string) => {
    callerLeft = true;
    controller.abort(new BusError("cancelled", reason));
  };
  const cancelSubject = mux.register({
    onMessage: (m) => {
      if (m.headers?.code !== 503) leave("Caller cancelled the stream");
    },
    onProbe: () => true,
  });
  const writer = new FrameWriter(
    (data) => {
      if (!nc.isClosed()) nc.publish(reply, data);
    },
    cancelSubject,
    frameWindow(msg, options),
  );

  // Liveness of the caller: a heartbeat request to its inbox; `gone` or no responders: it left.
  const idleMs = Number(msg.headers?.get(Header.idle)) || DEFAULT_IDLE_MS;
  const beatMs = Math.max(50, Math.min(idleMs / 3, 5000));
  const beat = setInterval(() => {
    if (nc.isClosed() || controller.signal.aborted) return;
    writer.flush(); // the start goes before the first probe
    probe(nc, reply, beatMs, () => leave("Caller went away"));
  }, beatMs);

  let beforeEnd: (() => void) | undefined;
  /** Runs the handler's `beforeEnd` once; its failure is logged, never the stream's. */
  const ending = () => {
    const fn = beforeEnd;
    beforeEnd = undefined;
    try {
      fn?.();
    } catch (err) {
      bus.log.error({ err, subject: msg.subject, requestId }, "Stream beforeEnd hook threw");
    }
  };
  const ctx: StreamContext<z.input<Chunk>> = {
    signal: controller.signal,
    requestId,
    subject: msg.subject,
    headers: msg.headers,
    send: (chunk) => {
      if (controller.signal.aborted) return false;
      writer.chunk(JSON.stringify(chunk));
      return true;
    },
    beforeEnd: (fn) => {
      beforeEnd = fn;
    },
    abort: (reason) => controller.abort(reason),
  };
  try {
    const req = contract.request.safeParse(decodeRequest(msg));
    if (!req.success) throw BusError.fromZod(req.error);
    const end = await handler(req.data, ctx);
    const json = JSON.stringify(end ?? null);
    ending();
    if (!callerLeft) writer.end(json);
  } catch (err) {
    const e = controller.signal.aborted && !(err instanceof BusError) ? BusError.from(controller.signal.reason) : BusError.from(err);
    record.errors += 1;
    record.lastError = e.message;
    if (e.code === "internal") bus.log.error({ err, subject: msg.subject, requestId }, "Stream handler failed");
    ending();
    if (!callerLeft) writer.error(e);
  } finally {
    ending();
    clearInterval(beat);
    writer.dispose();
    mux.unregister(cancelSubject);
    record.requests += 1;
    record.processingNs += process.hrtime.bigint() - started;
  }
}
