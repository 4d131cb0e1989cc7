/**
 * The stream frame: every message a stream handler (or a relay) publishes to its caller's
 * inbox. One JSON body, no headers:
 *
 * ```json
 * {"seq": 0, "cancel": "_INBOX.<id>.<token>", "chunks": [{…}, {…}], "end": {…}}
 * {"seq": 1, "chunks": [{…}]}
 * {"seq": 2, "error": {"error": {"code": "…", "message": "…", "retryable": false, "param": null}}}
 * ```
 *
 * - `seq` numbers the frames (not the chunks) from 0; the caller fails on a gap.
 * - The frame with `seq` 0 is the stream's start; `cancel` (only there) names where the caller
 *   sends a cancel and probes the handler's liveness. A relay's error frame has no `cancel`.
 * - `chunks`, in order, each one valid against the contract's chunk schema.
 * - `end` or `error` (at most one) ends the stream; chunks in the same frame come before it.
 *
 * The {@link FrameWriter} coalesces: the start waits up to `startDelayMs` to travel with the
 * first chunks or the end; chunks wait up to `flushMs` for the ones after them, or go as soon as
 * they add up to `maxBatchBytes`; the end or error joins whatever is pending.
 *
 * @module
 */
import { ErrorBody } from "@atlas/contracts";
import { BusError } from "./errors.ts";

/** Default longest wait of a chunk for the ones after it, in ms (the added time to first token at most). */
export const DEFAULT_FLUSH_MS = 2;
/** Default size (JSON characters of the chunks) at which a batch is sent without waiting. */
export const DEFAULT_MAX_BATCH_BYTES = 16 * 1024;
/** Default longest wait of the start for a first chunk or the end, in ms. */
export const DEFAULT_START_DELAY_MS = 50;
/** Largest batching window a caller may ask for, in ms. */
export const MAX_FLUSH_MS = 1000;

/** How a handler's frames are coalesced. */
export interface FrameWindow {
  flushMs: number;
  maxBatchBytes: number;
  startDelayMs: number;
}

/** One decoded frame. */
export interface Frame {
  seq: number;
  cancel: string | undefined;
  chunks: unknown[];
  /** Whether the frame ends the stream normally; the end message is `end`. */
  hasEnd: boolean;
  end: unknown;
  /** The stream's error, when the frame ends it with one. */
  error: BusError | undefined;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

type Timer = { clear(): void };

/** Runs `fn` after `ms` (at the next macrotask when 0). */
function later(ms: number, fn: () => void): Timer {
  if (ms <= 0) {
    const t = setImmediate(fn);
    return { clear: () => clearImmediate(t) };
  }
  const t = setTimeout(fn, ms);
  return { clear: () => clearTimeout(t) };
}

/** Handler side: buffers chunks and publishes them as few frames as the window allows. */
export class FrameWriter {
  readonly #publish: (data: Uint8Array) => void;
  readonly #cancel: string | undefined;
  readonly #window: FrameWindow;
  #seq = 0;
  #closed = false;
  #chunks: string[] = [];
  #size = 0;
  #flushTimer: Timer | undefined;
  #startTimer: Timer | undefined;

  /**
   * @param publish sends one frame body to the caller
   * @param cancel the handler's cancel subject, named in the first frame
   */
  constructor(publish: (data: Uint8Array) => void, cancel: string | undefined, window: FrameWindow) {
    this.#publish = publish;
    this.#cancel = cancel;
    this.#window = window;
    this.#startTimer = later(window.startDelayMs, () => {
      this.#startTimer = undefined;
      this.flush();
    });
  }

  /** Whether the first frame (the start) has been published. */
  get started(): boolean {
    return this.#seq > 0;
  }

  /** Whether the final frame has been published (or the writer disposed). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Adds one chunk, already JSON-encoded. */
  chunk(json: string): void {
    if (this.#closed) return;
    this.#chunks.push(json);
    this.#size += json.length + 1;
    if (this.#size >= this.#window.maxBatchBytes) this.flush();
    else
      this.#flushTimer ??= later(this.#window.flushMs, () => {
        this.#flushTimer = undefined;
        this.flush();
      });
  }

  /** Publishes what is pending now (the start, if not sent yet, and the buffered chunks). */
  flush(): void {
    if (this.#closed || (this.started && this.#chunks.length === 0)) return;
    this.#send("");
  }

  /** Publishes the last frame with the end message (already JSON-encoded). */
  end(json: string): void {
    if (!this.#closed) this.#send(`,"end":${json}`, true);
  }

  /** Publishes the last frame with the stream's error. */
  error(err: BusError): void {
    if (!this.#closed) this.#send(`,"error":${JSON.stringify(err.toBody())}`, true);
  }

  /** Stops the timers and drops anything pending; nothing more is published. */
  dispose(): void {
    this.#closed = true;
    this.#chunks = [];
    this.#clearTimers();
  }

  #send(tail: string, last = false): void {
    this.#clearTimers();
    let body = `{"seq":${this.#seq}`;
    if (!this.started && this.#cancel !== undefined) body += `,"cancel":${JSON.stringify(this.#cancel)}`;
    if (this.#chunks.length > 0) body += `,"chunks":[${this.#chunks.join(",")}]`;
    body += `${tail}}`;
    this.#chunks = [];
    this.#size = 0;
    this.#seq += 1;
    if (last) this.#closed = true;
    this.#publish(encoder.encode(body));
  }

  #clearTimers(): void {
    this.#flushTimer?.clear();
    this.#flushTimer = undefined;
    this.#startTimer?.clear();
    this.#startTimer = undefined;
  }
}

/** The body of a frame that ends a stream at once with `err` (a relay's refusal). */
export function errorFrame(err: BusError, seq = 0): Uint8Array {
  return encoder.encode(`{"seq":${seq},"error":${JSON.stringify(err.toBody())}}`);
}

/** Caller side: decodes a frame and checks its envelope; chunks and end are left to the contract. */
export function parseFrame(data: Uint8Array, what: string): Frame | BusError {
  let body: unknown;
  try {
    body = JSON.parse(decoder.decode(data));
  } catch (cause) {
    return new BusError("bad_reply", `Stream frame on "${what}" is not JSON`, { cause });
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return new BusError("bad_reply", `Stream frame on "${what}" is not an object`);
  }
  const f = body as Record<string, unknown>;
  const { seq, cancel, chunks } = f;
  if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0) {
    return new BusError("bad_reply", `Stream frame on "${what}" has no valid "seq"`);
  }
  if (cancel !== undefined && typeof cancel !== "string") return new BusError("bad_reply", `Stream frame on "${what}" has a bad "cancel"`);
  if (chunks !== undefined && !Array.isArray(chunks)) return new BusError("bad_reply", `Stream frame on "${what}" has a bad "chunks"`);
  let error: BusError | undefined;
  if (f.error !== undefined) {
    const parsed = ErrorBody.safeParse(f.error);
    error = parsed.success
      ? BusError.fromBody(parsed.data)
      : new BusError("bad_reply", `Error frame on "${what}" does not match the error schema`, { cause: parsed.error });
  }
  return { seq, cancel, chunks: chunks ?? [], hasEnd: "end" in f, end: f.end, error };
}
