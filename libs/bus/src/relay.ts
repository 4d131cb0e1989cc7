/**
 * A relay: takes a stream request (a caller's `callStream`), decides where it goes, and
 * republishes it to a target stream subject so that the target's handler streams straight back
 * to the original caller. The relay itself sends nothing on success: one hop fewer for every
 * frame.
 *
 * The forwarded request keeps every header of the original (request id, idle timeout, flush
 * window) and adds `Atlas-Reply-To: <the caller's inbox>`; the bus's stream handler sends its
 * frames there. Its NATS reply subject is a token of the relay's own shared inbox instead: NATS
 * sends the no-responders status (503) only to a subscription of the connection that published,
 * so with the caller's inbox as reply subject nobody would learn that the target has no
 * responders and the caller would wait out its start timeout. The relay does not wait for it
 * (no flush, no PING/PONG per request): its token listens for {@link NO_RESPONDERS_WINDOW_MS},
 * and a 503 that comes back in that time becomes an `unavailable` error frame to the caller (the
 * server answers a publish nobody listens to at once, long before that).
 *
 * Failures before the forward (bad request, the handler's own error, shutdown) reach the caller
 * as one error frame (`seq` 0), so its `callStream` rejects with that `BusError`.
 *
 * While the handler holds the request (e.g. queued for a free slot), the relay probes the
 * caller's inbox: when the caller aborted or went away the `signal` fires; a handler that sees
 * it should give back what it reserved and throw (no error frame is sent to a caller that left).
 * Whatever target the handler returns is forwarded, even to a caller that left meanwhile (the
 * target's handler then learns it from its own probe or the caller's cancel), so a resource
 * reserved for it is never silently dropped. A caller that aborts while the relay holds its request fails at once with `cancelled`;
 * if the relay forwards anyway, the caller cancels the target's handler when its start arrives.
 *
 * @module
 */
import type { StreamContract } from "@atlas/contracts";
import { type Msg, headers as natsHeaders } from "@nats-io/transport-node";
import type { z } from "zod";
import { DEFAULT_PROBE_MS } from "./caller.ts";
import { decodeRequest, encode, Header } from "./codec.ts";
import type { BusCore } from "./core.ts";
import type { EndpointRecord } from "./discovery.ts";
import { BusError } from "./errors.ts";
import { errorFrame } from "./frames.ts";
import { replyOf } from "./handler.ts";
import { probe } from "./mux.ts";
import type { HandlerContext, RelayOptions, RelayTarget } from "./types.ts";

/** Relays one stream request; resolves once it is forwarded or refused. */
export async function serveRelay<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType, TP, TReq extends z.ZodType>(
  bus: BusCore,
  contract: StreamContract<P, Req, Chunk, End>,
  target: StreamContract<TP, TReq, z.ZodType, z.ZodType>,
  handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<RelayTarget<TP, z.input<TReq>>>,
  msg: Msg,
  controller: AbortController,
  record: EndpointRecord,
  options: RelayOptions = {},
): Promise<void> {
  const reply = replyOf(msg);
  if (reply === undefined) return;
  const started = process.hrtime.bigint();
  const requestId = msg.headers?.get(Header.requestId) || crypto.randomUUID();
  const nc = bus.nc;
  let callerLeft = false;
  let answered = false;
  const refuse = (e: BusError) => {
    record.errors += 1;
    record.lastError = e.message;
    if (answered || callerLeft || nc.isClosed()) return;
    answered = true;
    nc.publish(reply, errorFrame(e));
  };
  const probeMs = Math.max(50, options.probeMs ?? DEFAULT_PROBE_MS);
  const beat = setInterval(() => {
    if (controller.signal.aborted) return;
    probe(nc, reply, probeMs, () => {
      callerLeft = true;
      controller.abort(new BusError("cancelled", "Caller went away"));
    });
  }, probeMs);
  const ctx: HandlerContext = { signal: controller.signal, requestId, subject: msg.subject, headers: msg.headers };
  try {
    const req = contract.request.safeParse(decodeRequest(msg));
    if (!req.success) throw BusError.fromZod(req.error);
    const to = await handler(req.data, ctx);
    clearInterval(beat);
    const subject = typeof to.subject === "string" ? to.subject : target.subject(bus.prefix, to.params as TP);
    forward(bus, subject, encode(to.request), msg, reply, requestId, () => {
      const e = new BusError("unavailable", `No service answers "${subject}"`);
      record.errors += 1;
      record.lastError = e.message;
      if (!nc.isClosed()) nc.publish(reply, errorFrame(e));
    });
    answered = true;
  } catch (err) {
    const e = controller.signal.aborted && !(err instanceof BusError) ? BusError.from(controller.signal.reason) : BusError.from(err);
    if (e.code === "internal") bus.log.error({ err, subject: msg.subject, requestId }, "Relay handler failed");
    refuse(e);
  } finally {
    clearInterval(beat);
    record.requests += 1;
    record.processingNs += process.hrtime.bigint() - started;
  }
}

/** How long a relay listens for the no-responders status of a forwarded request, in ms. */
export const NO_RESPONDERS_WINDOW_MS = 5000;

/** Publishes the forwarded request; `onNoResponders` when the server says nobody listens there. */
function forward(
  bus: BusCore,
  subject: string,
  data: Uint8Array,
  original: Msg,
  reply: string,
  requestId: string,
  onNoResponders: () => void,
): void {
  const nc = bus.nc;
  if (nc.isClosed()) throw new BusError("unavailable", "NATS connection is closed");
  // The request's own headers go on (request id, idle timeout, flush window), plus the caller's inbox.
  const h = original.headers ?? natsHeaders();
  h.set(Header.requestId, requestId);
  h.set(Header.replyTo, reply);
  const mux = bus.streamMux();
  const token = mux.register({
    onMessage: (m) => {
      if (m.headers?.code !== 503) return;
      mux.unregister(token);
      onNoResponders();
    },
    onProbe: () => false,
  });
  nc.publish(subject, data, { reply: token, headers: h });
  mux.expire(token, NO_RESPONDERS_WINDOW_MS);
}
