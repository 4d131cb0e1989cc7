/**
 * Handler side of a request/reply contract: validates the request, runs the handler, answers.
 *
 * Two ways to answer:
 * - `serve`: the handler's result is the reply (its rejection an error reply);
 * - `serveForward`: the handler returns one message to publish with the *caller's* reply
 *   subject, so that whoever receives it answers the caller directly. Persistence forwards a
 *   session's layer record to JetStream this way, and JetStream's acknowledgement is the reply
 *   (one message fewer than waiting for the ack and answering it). Errors before the forward are
 *   error replies as with `serve`; the forward's receiver is the contract's responder after it.
 *
 * @module
 */
import type { RpcContract } from "@atlas/contracts";
import type { Msg, MsgHdrs } from "@nats-io/transport-node";
import type { z } from "zod";
import { decodeRequest, encode, errorMessage, Header, makeHeaders } from "./codec.ts";
import type { BusCore } from "./core.ts";
import type { EndpointRecord } from "./discovery.ts";
import { BusError } from "./errors.ts";
import type { HandlerContext } from "./types.ts";

/** A message a forwarding handler hands on: published with the caller's reply subject. */
export interface Forward {
  subject: string;
  data: Uint8Array;
  headers?: Record<string, string>;
}

/** What one request came to: a reply to send, or a message to forward in its place. */
type Answer = { reply: unknown } | { forward: Forward };

/** Serves one request; the returned promise settles once it is answered (or forwarded). */
export async function serveRpc<Req extends z.ZodType>(
  bus: BusCore,
  contract: RpcContract<unknown, Req, z.ZodType>,
  answer: (req: z.infer<Req>, ctx: HandlerContext) => Promise<Answer>,
  msg: Msg,
  controller: AbortController,
  record: EndpointRecord,
): Promise<void> {
  const reply = msg.reply;
  if (reply === undefined) return;
  const started = process.hrtime.bigint();
  const requestId = msg.headers?.get(Header.requestId) || crypto.randomUUID();
  const ctx: HandlerContext = { signal: controller.signal, requestId, subject: msg.subject, headers: msg.headers };
  let out: { subject: string; data: Uint8Array; headers?: MsgHdrs; reply?: string };
  try {
    const req = contract.request.safeParse(decodeRequest(msg));
    if (!req.success) throw BusError.fromZod(req.error);
    const a = await answer(req.data, ctx);
    if ("forward" in a) {
      const { subject, data, headers } = a.forward;
      out = { subject, data, reply, ...(headers === undefined ? {} : { headers: makeHeaders(headers) }) };
    } else out = { subject: reply, data: encode(a.reply) };
  } catch (err) {
    const e = BusError.from(err);
    record.errors += 1;
    record.lastError = e.message;
    if (e.code === "internal") bus.log.error({ err, subject: msg.subject, requestId }, "Handler failed");
    out = { subject: reply, ...errorMessage(e, { [Header.requestId]: requestId }) };
  }
  record.requests += 1;
  record.processingNs += process.hrtime.bigint() - started;
  if (bus.nc.isClosed()) return;
  const { subject, data, ...options } = out;
  bus.nc.publish(subject, data, options);
}
