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
  /** On a stream message: `start | chunk | end | error | heartbeat`. */
  kind: "Atlas-Kind",
  /** On a stream message: the chunk's sequence number, from 0. */
  seq: "Atlas-Seq",
  /** On a stream's start: where the caller sends a cancel. */
  cancel: "Atlas-Cancel",
  /** On a stream request: the caller's idle timeout, so the handler heartbeats in time. */
  idle: "Atlas-Idle-Ms",
  /** NATS micro's standard error headers, for foreign tooling. */
  microError: "Nats-Service-Error",
  microErrorCode: "Nats-Service-Error-Code",
} as const;

/** Kinds of message inside a stream. */
export const StreamKind = {
  start: "start",
  chunk: "chunk",
  end: "end",
  error: "error",
  heartbeat: "heartbeat",
} as const;
/** Kinds of message inside a stream. */
export type StreamKind = (typeof StreamKind)[keyof typeof StreamKind];

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
