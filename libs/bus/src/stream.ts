/**
 * Streams over NATS: one request, then `start`, many `chunk`s and one `end` (or one `error`)
 * published to the caller's inbox, in order, numbered.
 *
 * - The handler creates a cancel subject and names it in `start`; the caller publishes there
 *   when it aborts, and the handler's `signal` fires.
 * - The handler probes the caller's inbox with a heartbeat request: when nobody answers
 *   (the caller died or gave up), the handler's `signal` fires too, so a vanished caller never
 *   keeps a slot busy.
 * - Symmetrically, once started the caller probes the handler's cancel subject with a
 *   heartbeat request (answered, not taken as a cancel): when nobody answers (the handler's
 *   process died, e.g. a SIGKILLed worker), the call fails at once with `unavailable` instead of
 *   waiting for its idle timeout.
 * - The caller fails with `timeout` when nothing arrives within its idle timeout (a handler that
 *   is frozen but still connected).
 *
 * @module
 */
import type { StreamContract } from "@atlas/contracts";
import { createInbox, type Msg } from "@nats-io/transport-node";
import type { z } from "zod";
import type { Bus } from "./bus.ts";
import { decode, encode, errorMessage, errorOf, Header, makeHeaders, StreamKind } from "./codec.ts";
import type { EndpointRecord } from "./discovery.ts";
import { BusError } from "./errors.ts";
import { AsyncQueue } from "./queue.ts";
import type { ParamsArg, StreamCallOptions, StreamContext } from "./types.ts";

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
  bus: Bus,
  contract: StreamContract<P, Req, Chunk, End>,
  request: z.input<Req>,
  options: StreamCallOptions & ParamsArg<P>,
): StreamCall<z.infer<Chunk>, z.infer<End>> {
  const subject = contract.subject(bus.prefix, options.params as P);
  const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  const startMs = options.startTimeoutMs ?? bus.defaultTimeoutMs;
  const probeMs = Math.max(50, options.probeMs ?? DEFAULT_PROBE_MS);
  const inbox = createInbox();
  let cancelSubject: string | undefined;
  let expectedSeq = 0;
  let finished = false;
  let cancelled = false;
  let resolveEnd!: (v: z.infer<End>) => void;
  let rejectEnd!: (e: unknown) => void;
  const result = new Promise<z.infer<End>>((res, rej) => {
    resolveEnd = res;
    rejectEnd = rej;
  });
  result.catch(() => {}); // the iterator reports the same error; nobody must await both
  const queue = new AsyncQueue<z.infer<Chunk>>({ onReturn: () => cancel("Caller stopped reading") });
  let timer: NodeJS.Timeout | undefined;
  let probe: NodeJS.Timeout | undefined;

  const arm = (ms: number, what: string) => {
    clearTimeout(timer);
    timer = setTimeout(() => fail(new BusError("timeout", `No ${what} on "${subject}" within ${ms} ms`)), ms);
  };
  const finish = () => {
    finished = true;
    clearTimeout(timer);
    clearInterval(probe);
    options.signal?.removeEventListener("abort", onAbort);
  };
  const fail = (err: BusError) => {
    if (finished) return;
    // Tell the handler to stop, then stop listening.
    if (cancelSubject !== undefined && !bus.nc.isClosed()) bus.nc.publish(cancelSubject);
    finish();
    sub.unsubscribe();
    queue.fail(err);
    rejectEnd(err);
  };
  const cancel = (reason = "Call aborted by the caller") => {
    if (finished) return;
    cancelled = true;
    if (cancelSubject === undefined) {
      // The handler has not started: keep listening for its start just long enough to cancel it.
      arm(startMs, "start");
      queue.fail(new BusError("cancelled", reason));
      rejectEnd(new BusError("cancelled", reason));
      return;
    }
    fail(new BusError("cancelled", reason));
  };
  const onAbort = () => cancel();

  const sub = bus.nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err !== null) return fail(new BusError("unavailable", `Stream inbox failed: ${err.message}`, { cause: err }));
      onMessage(msg);
    },
  });

  function onMessage(msg: Msg): void {
    if (finished) return;
    if (msg.headers?.code === 503) {
      return fail(new BusError("unavailable", `No service answers "${subject}"`));
    }
    const kind = msg.headers?.get(Header.kind);
    if (kind === StreamKind.heartbeat) {
      if (msg.reply !== undefined) msg.respond();
      arm(idleMs, "message");
      return;
    }
    if (kind === StreamKind.start) {
      cancelSubject = msg.headers?.get(Header.cancel) || undefined;
      if (cancelled) return fail(new BusError("cancelled", "Call aborted by the caller"));
      arm(idleMs, "message");
      if (cancelSubject !== undefined) startProbe(cancelSubject);
      return;
    }
    const error = errorOf(msg);
    if (error !== undefined || kind === StreamKind.error) {
      return fail(error ?? new BusError("internal", "Stream failed without a reason"));
    }
    const seq = Number(msg.headers?.get(Header.seq));
    if (seq !== expectedSeq) {
      return fail(new BusError("unavailable", `Stream on "${subject}" lost messages: got ${seq}, expected ${expectedSeq}`));
    }
    expectedSeq += 1;
    let body: unknown;
    try {
      body = decode(msg.data);
    } catch (cause) {
      return fail(new BusError("bad_reply", `Stream message on "${subject}" is not JSON`, { cause }));
    }
    if (kind === StreamKind.end) {
      const end = contract.end.safeParse(body);
      if (!end.success) return fail(new BusError("bad_reply", `End of "${contract.name}" does not match its schema`, { cause: end.error }));
      finish();
      sub.unsubscribe();
      queue.close();
      resolveEnd(end.data);
      return;
    }
    const chunk = contract.chunk.safeParse(body);
    if (!chunk.success)
      return fail(new BusError("bad_reply", `Chunk of "${contract.name}" does not match its schema`, { cause: chunk.error }));
    arm(idleMs, "message");
    queue.push(chunk.data);
  }

  /** Asks the handler's cancel subject whether anyone is still there; no responders: it died. */
  function startProbe(target: string): void {
    probe = setInterval(() => {
      if (finished || bus.nc.isClosed()) return;
      bus.nc
        .request(target, new Uint8Array(), { timeout: probeMs, headers: makeHeaders({ [Header.kind]: StreamKind.heartbeat }) })
        .catch((err: unknown) => {
          // A timeout is left to the idle timer (a slow or frozen handler); only "nobody there" fails now.
          if (noResponders(err)) fail(new BusError("unavailable", `The handler of "${subject}" went away mid-stream`));
        });
    }, probeMs);
    probe.unref?.();
  }

  if (options.signal?.aborted) {
    finished = true;
    sub.unsubscribe();
    const err = new BusError("cancelled", "Call aborted by the caller");
    queue.fail(err);
    rejectEnd(err);
  } else {
    options.signal?.addEventListener("abort", onAbort, { once: true });
    arm(startMs, "start");
    bus.nc.publish(subject, encode(request), {
      reply: inbox,
      headers: makeHeaders({ [Header.requestId]: options.requestId, [Header.idle]: String(idleMs) }),
    });
  }

  return {
    result,
    cancel,
    [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
  };
}

/** Handler side of a stream; resolves when the handler and its messages are done. */
export async function serveStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
  bus: Bus,
  contract: StreamContract<P, Req, Chunk, End>,
  handler: (req: z.infer<Req>, ctx: StreamContext<z.input<Chunk>>) => Promise<z.input<End>>,
  msg: Msg,
  controller: AbortController,
  record: EndpointRecord,
): Promise<void> {
  const reply = msg.reply;
  if (reply === undefined) return;
  const started = process.hrtime.bigint();
  const requestId = msg.headers?.get(Header.requestId) || crypto.randomUUID();
  const nc = bus.nc;
  const cancelSubject = createInbox();
  const cancelSub = nc.subscribe(cancelSubject, {
    callback: (err, m) => {
      if (err !== null) return;
      // The caller's liveness probe: answer it; anything else is the cancel.
      if (m.headers?.get(Header.kind) === StreamKind.heartbeat) {
        if (m.reply !== undefined && !controller.signal.aborted) m.respond();
        return;
      }
      controller.abort(new BusError("cancelled", "Caller cancelled the stream"));
    },
  });
  let seq = 0;
  const publish = (kind: string, data: Uint8Array, extra: Record<string, string> = {}) => {
    if (nc.isClosed()) return;
    nc.publish(reply, data, { headers: makeHeaders({ [Header.kind]: kind, [Header.seq]: String(seq), ...extra }) });
  };
  publish(StreamKind.start, new Uint8Array(), { [Header.cancel]: cancelSubject });

  // Liveness of the caller: a heartbeat request to its inbox; no responders means it is gone.
  const idleMs = Number(msg.headers?.get(Header.idle)) || DEFAULT_IDLE_MS;
  const beatMs = Math.max(50, Math.min(idleMs / 3, 5000));
  const beat = setInterval(() => {
    if (nc.isClosed() || controller.signal.aborted) return;
    nc.request(reply, new Uint8Array(), {
      timeout: beatMs,
      headers: makeHeaders({ [Header.kind]: StreamKind.heartbeat }),
    }).catch((err: unknown) => {
      if (noResponders(err)) controller.abort(new BusError("cancelled", "Caller went away"));
    });
  }, beatMs);

  const ctx: StreamContext<z.input<Chunk>> = {
    signal: controller.signal,
    requestId,
    subject: msg.subject,
    headers: msg.headers,
    send: (chunk) => {
      if (controller.signal.aborted) return false;
      publish(StreamKind.chunk, encode(chunk));
      seq += 1;
      return true;
    },
  };
  try {
    let body: unknown;
    try {
      body = decode(msg.data) ?? {};
    } catch (cause) {
      throw new BusError("bad_request", "Request body is not JSON", { cause });
    }
    const req = contract.request.safeParse(body);
    if (!req.success) throw BusError.fromZod(req.error);
    const end = await handler(req.data, ctx);
    if (!controller.signal.aborted) publish(StreamKind.end, encode(end));
  } catch (err) {
    const e = controller.signal.aborted && !(err instanceof BusError) ? BusError.from(controller.signal.reason) : BusError.from(err);
    record.errors += 1;
    record.lastError = e.message;
    if (e.code === "internal") bus.log.error({ err, subject: msg.subject, requestId }, "Stream handler failed");
    if (!nc.isClosed()) {
      const m = errorMessage(e, { [Header.kind]: StreamKind.error, [Header.seq]: String(seq), [Header.requestId]: requestId });
      nc.publish(reply, m.data, { headers: m.headers });
    }
  } finally {
    clearInterval(beat);
    cancelSub.unsubscribe();
    record.requests += 1;
    record.processingNs += process.hrtime.bigint() - started;
  }
}

/** Whether a failed request found nobody subscribed to its subject. */
function noResponders(err: unknown): boolean {
  const name = err instanceof Error ? `${err.name} ${err.cause instanceof Error ? err.cause.name : ""}` : "";
  return /NoResponders/.test(name) || (err instanceof Error && /no responders/i.test(err.message));
}
