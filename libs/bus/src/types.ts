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
  /**
   * Runs `fn` once, synchronously, right before the stream's last frame (end or error) is
   * published — or when the handler settles without one (the caller left): whatever `fn`
   * publishes leaves in the same socket write as that frame, and ahead of it. A worker gives its
   * lease back this way.
   */
  beforeEnd(fn: () => void): void;
  /**
   * Fires `signal` with `reason`: the handler's own work stops as if the caller had cancelled,
   * and the stream still ends with what the handler then returns or throws (a worker stops a
   * generation whose lease a newer one took over).
   */
  abort(reason: unknown): void;
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
  /**
   * The batching window to ask the handler for, in ms (0: chunks go at the next macrotask; at
   * most 1000): how long a chunk may wait to share a message with the next ones. Default: the
   * handler's own (`StreamServeOptions.flushMs`, 2 ms by default). It adds at most this much to
   * the time to first token.
   */
  flushMs?: number;
  signal?: AbortSignal;
  requestId?: string;
}

/** How a stream handler coalesces its frames (see `frames.ts`). */
export interface StreamServeOptions {
  /**
   * Longest wait of a chunk for the ones after it before they go as one message, in ms; default 2,
   * 0 means the next macrotask. The caller may ask for another (`StreamCallOptions.flushMs`).
   */
  flushMs?: number;
  /** Buffered chunks (JSON characters) at which a batch goes at once; default 16 KiB. */
  maxBatchBytes?: number;
  /**
   * Longest wait of the start (it names the cancel subject and starts the caller's liveness
   * probe) for the first chunks or the end, in ms; default 10. It does not delay any chunk.
   */
  startDelayMs?: number;
}

/** Options for serving a relay. */
export interface RelayOptions extends ServeOptions {
  /** How often the relay checks that the caller is still there while it holds the request; default 1000 ms. */
  probeMs?: number;
}

/**
 * Where a relay sends a request: the target contract's subject for `params`, or an explicit
 * `subject` (it must be served by a stream handler of the same chunk and end schemas).
 */
export type RelayTarget<TP, TReq> = { request: TReq } & (({ subject?: undefined } & ParamsArg<TP>) | { subject: string; params?: TP });

/** Options for serving an endpoint. */
export interface ServeOptions {
  /** Queue group; default the service name, so instances share the load. `false` for none. */
  queue?: string | false;
  /** Endpoint metadata shown in `$SRV.INFO`. */
  metadata?: Record<string, string>;
}
