/**
 * Caller side of a stream: publishes the request with a token of the bus's shared inbox as its
 * reply subject, then reads frames (see `frames.ts`) until the end or an error.
 *
 * - Frames are numbered; a gap fails the call with `unavailable` (a message was lost).
 * - Every chunk is validated once against the contract's chunk schema, the end against its end
 *   schema (`bad_reply` otherwise).
 * - Once started, the caller probes the handler's cancel subject (a heartbeat request through
 *   the handler's mux): a `gone` answer or no responders (its process died) fails the call at once
 *   with `unavailable` instead of after the idle timeout.
 * - `timeout` when nothing arrives within the start timeout (before the first frame) or the idle
 *   timeout (after it). Probes from the handler answer "alive" and, once started, count as
 *   activity; before the start they do not extend the start timeout, which bounds the wait even
 *   while a relay holds the request in a queue.
 * - Abort before the first frame: the call fails at once with `cancelled`; its token stays
 *   registered (answering probes `gone`) for up to the start timeout so that a start arriving
 *   later is cancelled through its cancel subject. Abort after: a cancel is published at once.
 *
 * @module
 */
import type { StreamContract } from "@atlas/contracts";
import type { Msg } from "@nats-io/transport-node";
import type { z } from "zod";
import { encode, Header, makeHeaders } from "./codec.ts";
import type { BusCore } from "./core.ts";
import { BusError, natsFailure } from "./errors.ts";
import { MAX_FLUSH_MS, parseFrame } from "./frames.ts";
import { probe } from "./mux.ts";
import { AsyncQueue } from "./queue.ts";
import type { ParamsArg, StreamCallOptions } from "./types.ts";

/** Default idle timeout of a streaming call, in ms. */
export const DEFAULT_IDLE_MS = 30_000;
/** Default period of the caller's liveness probe of a started handler, in ms. */
export const DEFAULT_PROBE_MS = 1000;

/** A running streaming call: iterate it for chunks; `result` settles with the end message. */
export interface StreamCall<Chunk, End> extends AsyncIterable<Chunk> {
  /** The end message; rejects with the stream's error. */
  readonly result: Promise<End>;
  /** Cancels the stream; the handler's signal fires. */
  cancel(reason?: string): void;
}

/** Caller side of a stream. */
export function callStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
  bus: BusCore,
  contract: StreamContract<P, Req, Chunk, End>,
  request: z.input<Req>,
  options: StreamCallOptions & ParamsArg<P>,
): StreamCall<z.infer<Chunk>, z.infer<End>> {
  const subject = contract.subject(bus.prefix, options.params as P);
  const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  const startMs = options.startTimeoutMs ?? bus.defaultTimeoutMs;
  const probeMs = Math.max(50, options.probeMs ?? DEFAULT_PROBE_MS);
  const nc = bus.nc;
  const mux = bus.streamMux();
  let inbox: string | undefined;
  let cancelSubject: string | undefined;
  let expectedSeq = 0;
  /** `open` until the call settled; `cancelled`: settled by an abort, still listening for a start to cancel. */
  let state: "open" | "cancelled" | "done" = "open";
  let resolveEnd!: (v: z.infer<End>) => void;
  let rejectEnd!: (e: unknown) => void;
  const result = new Promise<z.infer<End>>((res, rej) => {
    resolveEnd = res;
    rejectEnd = rej;
  });
  result.catch(() => {}); // the iterator reports the same error; nobody must await both
  const queue = new AsyncQueue<z.infer<Chunk>>({ onReturn: () => cancel("Caller stopped reading") });
  let timer: NodeJS.Timeout | undefined;
  let probeTimer: NodeJS.Timeout | undefined;

  const arm = (ms: number, what: string) => {
    clearTimeout(timer);
    timer = setTimeout(() => fail(new BusError("timeout", `No ${what} on "${subject}" within ${ms} ms`)), ms);
  };
  /** Stops listening for good. */
  const close = () => {
    state = "done";
    clearTimeout(timer);
    clearInterval(probeTimer);
    options.signal?.removeEventListener("abort", onAbort);
    if (inbox !== undefined) mux.unregister(inbox);
  };
  const fail = (err: BusError) => {
    if (state === "done") return;
    const settled = state === "cancelled";
    // Tell the handler to stop, then stop listening.
    if (cancelSubject !== undefined && !nc.isClosed()) nc.publish(cancelSubject);
    close();
    if (settled) return;
    queue.fail(err);
    rejectEnd(err);
  };
  const cancel = (reason = "Call aborted by the caller") => {
    if (state !== "open") return;
    if (cancelSubject === undefined) {
      // Not started: fail now, but keep listening for the start just long enough to cancel it.
      state = "cancelled";
      clearInterval(probeTimer);
      options.signal?.removeEventListener("abort", onAbort);
      arm(startMs, "start");
      const err = new BusError("cancelled", reason);
      queue.fail(err);
      rejectEnd(err);
      return;
    }
    fail(new BusError("cancelled", reason));
  };
  const onAbort = () => cancel();

  function onMessage(msg: Msg): void {
    if (state === "done") return;
    if (msg.headers?.code === 503) return fail(new BusError("unavailable", `No service answers "${subject}"`));
    const frame = parseFrame(msg.data, subject);
    if (frame instanceof BusError) return fail(frame);
    if (frame.seq !== expectedSeq) {
      return fail(new BusError("unavailable", `Stream on "${subject}" lost messages: got frame ${frame.seq}, expected ${expectedSeq}`));
    }
    expectedSeq += 1;
    if (frame.seq === 0 && frame.cancel !== undefined) {
      cancelSubject = frame.cancel;
      if (state === "cancelled") {
        // Aborted before the start: cancel the handler unless this frame already ended the stream.
        if (frame.hasEnd || frame.error !== undefined) cancelSubject = undefined;
        return fail(new BusError("cancelled", "Call aborted by the caller"));
      }
      if (!frame.hasEnd && frame.error === undefined) startProbe(cancelSubject);
    }
    if (state === "cancelled") return close();
    arm(idleMs, "message");
    for (const raw of frame.chunks) {
      const chunk = contract.chunk.safeParse(raw);
      if (!chunk.success)
        return fail(new BusError("bad_reply", `Chunk of "${contract.name}" does not match its schema`, { cause: chunk.error }));
      queue.push(chunk.data);
    }
    if (frame.error !== undefined) {
      cancelSubject = undefined; // the handler is done: no cancel to send
      return fail(frame.error);
    }
    if (frame.hasEnd) {
      const end = contract.end.safeParse(frame.end);
      cancelSubject = undefined;
      if (!end.success) return fail(new BusError("bad_reply", `End of "${contract.name}" does not match its schema`, { cause: end.error }));
      close();
      queue.close();
      resolveEnd(end.data);
    }
  }

  /** Asks the handler's cancel subject whether anyone is still there. */
  function startProbe(target: string): void {
    probeTimer = setInterval(() => {
      if (state !== "open") return;
      probe(nc, target, probeMs, () => fail(new BusError("unavailable", `The handler of "${subject}" went away mid-stream`)));
    }, probeMs);
    probeTimer.unref?.();
  }

  if (options.signal?.aborted) {
    state = "done";
    const err = new BusError("cancelled", "Call aborted by the caller");
    queue.fail(err);
    rejectEnd(err);
  } else {
    try {
      inbox = mux.register({
        onMessage,
        onProbe: () => {
          if (state !== "open") return false;
          if (cancelSubject !== undefined) arm(idleMs, "message");
          return true;
        },
        onClosed: (err) => fail(new BusError("unavailable", `Stream inbox failed: ${err.message}`, { cause: err })),
      });
      options.signal?.addEventListener("abort", onAbort, { once: true });
      arm(startMs, "start");
      const flush = options.flushMs === undefined ? undefined : String(Math.min(MAX_FLUSH_MS, Math.max(0, options.flushMs)));
      nc.publish(subject, encode(request), {
        reply: inbox,
        headers: makeHeaders({ [Header.requestId]: options.requestId, [Header.idle]: String(idleMs), [Header.flush]: flush }),
      });
    } catch (err) {
      // A closed or draining connection: the call fails like any other, it does not throw.
      fail(natsFailure(err, subject, startMs));
    }
  }

  return {
    result,
    cancel,
    [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
  };
}
