/**
 * Wire encoding shared by every message: JSON bodies, and a few headers that say what a
 * message is. Kept in one place so the sender and the handler cannot disagree.
 *
 * @module
 */
import { ErrorBody } from "@atlas/contracts";
import { type Msg, type MsgHdrs, headers as natsHeaders } from "@nats-io/transport-node";
import { BusError } from "./errors.ts";

/** Header names the bus uses. */
export const Header = {
  /** Request id, propagated from the HTTP edge through every hop. */
  requestId: "Atlas-Request-Id",
  /** On a reply: this message is an error; its body is an `ErrorBody`. */
  error: "Atlas-Error",
  /** On a stream's liveness probe and its answer: `heartbeat` (the probe), `gone` (nobody there). */
  kind: "Atlas-Kind",
  /** On a stream request: the caller's idle timeout, so the handler heartbeats in time. */
  idle: "Atlas-Idle-Ms",
  /** On a stream request: the batching window the caller asks for (ms), instead of the handler's default. */
  flush: "Atlas-Flush-Ms",
  /**
   * On a relayed stream request: the caller's inbox, where the frames go. The NATS reply subject
   * of a relayed request is the relay's own, so that NATS tells the relay (not nobody) when the
   * target has no responders.
   */
  replyTo: "Atlas-Reply-To",
  /** NATS micro's standard error headers, for foreign tooling. */
  microError: "Nats-Service-Error",
  microErrorCode: "Nats-Service-Error-Code",
} as const;

/** Kinds of liveness message on a stream's muxed inboxes (frames themselves carry no headers). */
export const ProbeKind = {
  /** A liveness probe (a request): answered empty while the call or handler is alive. */
  heartbeat: "heartbeat",
  /** The answer to a probe for a call or handler that is not there (any more). */
  gone: "gone",
} as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a JSON body. */
export function encode(value: unknown): Uint8Array {
  return value === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(value));
}

/** Decodes a JSON body; an empty body is `undefined`. */
export function decode(data: Uint8Array): unknown {
  if (data.length === 0) return undefined;
  return JSON.parse(decoder.decode(data));
}

/** Decodes a request body (empty: `{}`); a body that is not JSON is a `bad_request`. */
export function decodeRequest(msg: Msg): unknown {
  try {
    return decode(msg.data) ?? {};
  } catch (cause) {
    throw new BusError("bad_request", "Request body is not JSON", { cause });
  }
}

/** Builds headers from a plain record. */
export function makeHeaders(values: Record<string, string | undefined>): MsgHdrs {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(values)) if (v !== undefined) h.set(k, v);
  return h;
}

/** Headers and body of an error reply. */
export function errorMessage(
  err: BusError,
  extra: Record<string, string | undefined> = {},
): {
  headers: MsgHdrs;
  data: Uint8Array;
} {
  const status = err.code === "bad_request" ? "400" : err.code === "not_found" ? "404" : "500";
  return {
    headers: makeHeaders({
      ...extra,
      [Header.error]: err.code,
      [Header.microError]: err.message.slice(0, 512).replace(/[\r\n]+/g, " "),
      [Header.microErrorCode]: status,
    }),
    data: encode(err.toBody()),
  };
}

/** If `msg` is an error reply, the error it carries. */
export function errorOf(msg: Msg): BusError | undefined {
  if (msg.headers?.has(Header.error) !== true) return undefined;
  let body: unknown;
  try {
    body = decode(msg.data);
  } catch (cause) {
    return new BusError("bad_reply", "Error reply is not JSON", { cause });
  }
  const parsed = ErrorBody.safeParse(body);
  return parsed.success
    ? BusError.fromBody(parsed.data)
    : new BusError("bad_reply", "Error reply does not match the error schema", { cause: parsed.error });
}
