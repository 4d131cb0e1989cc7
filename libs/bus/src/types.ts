/**
 * Types shared by the bus modules.
 *
 * @module
 */
import type { MsgHdrs } from "@nats-io/transport-node";

/** The logging surface the bus needs; a pino logger fits. */
export interface BusLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A logger that drops everything. */
export const silentLogger: BusLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** What a handler receives besides the request. */
export interface HandlerContext {
  /** Aborted when the caller cancels or goes away, or the service shuts down. */
  readonly signal: AbortSignal;
  /** The request id, propagated from the HTTP edge (or made up by the bus). */
  readonly requestId: string;
  /** The concrete subject the request came on. */
  readonly subject: string;
  /** The request's headers. */
  readonly headers: MsgHdrs | undefined;
}

/** What a stream handler receives besides the request. */
export interface StreamContext<Chunk> extends HandlerContext {
  /** Sends one chunk to the caller; returns false once the stream is cancelled. */
  send(chunk: Chunk): boolean;
}

/** Parameters a contract's subject needs, or none. */
export type ParamsArg<P> = [P] extends [void] ? { params?: undefined } : { params: P };

/** Options for a call. */
export interface CallOptions {
  /** Milliseconds to wait for the reply; default the bus's `defaultTimeoutMs`. */
  timeoutMs?: number;
  signal?: AbortSignal;
  requestId?: string;
}

/** Options for a streaming call. */
export interface StreamCallOptions {
  /** Milliseconds to wait for the handler to start; default the bus's `defaultTimeoutMs`. */
  startTimeoutMs?: number;
  /** Longest silence between two messages once started; the handler heartbeats within it. */
  idleTimeoutMs?: number;
  /**
   * How often the caller checks that a started handler is still connected (default 1000 ms);
   * when it is gone the call fails with `unavailable` at once rather than after the idle timeout.
   */
  probeMs?: number;
  signal?: AbortSignal;
  requestId?: string;
}

/** Options for serving an endpoint. */
export interface ServeOptions {
  /** Queue group; default the service name, so instances share the load. `false` for none. */
  queue?: string | false;
  /** Endpoint metadata shown in `$SRV.INFO`. */
  metadata?: Record<string, string>;
}
