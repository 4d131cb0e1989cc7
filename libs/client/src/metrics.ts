/**
 * The cluster's metrics (docs/metrics.md; admin keys when the server has keys): the current view,
 * the Prometheus text, and {@link MetricsApi.subscribe}, every snapshot over Server-Sent Events
 * that resumes after a lost connection with `Last-Event-ID`, so no snapshot is skipped or repeated
 * (or an `event: reset` says which were lost).
 *
 * @module
 */
import { AtlasError } from "./errors.ts";
import type { CallOptions, Transport } from "./http.ts";
import { ErrorBody, MetricsResetData, MetricsSnapshot, MetricsView, type MetricsWindow } from "./schemas.ts";
import { parseSse } from "./sse.ts";

/** One thing the stream says. */
export type MetricsStreamEvent =
  /** A snapshot; `id` (its `seq`) is where a later subscription resumes. */
  | { type: "snapshot"; id: string; snapshot: MetricsSnapshot }
  /** Snapshots were lost (evicted, an unknown id, the metrics service restarted); the stream goes on from a new start. */
  | { type: "reset"; reset: MetricsResetData };

/** A reconnection, as `onReconnect` sees it. */
export interface ReconnectInfo {
  /** Consecutive failed or dropped connections so far (1 for the first). */
  attempt: number;
  /** The id the next connection resumes after (`Last-Event-ID`). */
  lastEventId: string | undefined;
  /** Why: the connection dropped, the server sent `event: error`, or a connect failed (503…). */
  error: AtlasError;
  /** Milliseconds until the next attempt. */
  delayMs: number;
}

/** `subscribe()` options. */
export interface SubscribeOptions {
  /** Ends the subscription (the iterator returns). */
  signal?: AbortSignal | undefined;
  /** Resume after this snapshot id (a previous subscription's last `id`). */
  lastEventId?: string | undefined;
  /** A new subscription starts with the newest `history` snapshots the metrics service keeps (≤ 300). */
  history?: number | undefined;
  /** Wait before reconnecting (default 500 ms; the server's `retry:` or `Retry-After` when longer). */
  retryDelayMs?: number | undefined;
  /** Consecutive failed connections before the iterator throws (default 10; any event received resets the count). */
  maxRetries?: number | undefined;
  /** Told of every reconnection. */
  onReconnect?: ((info: ReconnectInfo) => void) | undefined;
}

/** `client.metrics`. */
export class MetricsApi {
  readonly #http: Transport;

  constructor(http: Transport) {
    this.#http = http;
  }

  /** The current view over a sliding window (`10s`, `1m` default, `5m`). */
  async get(options: CallOptions & { window?: MetricsWindow } = {}): Promise<MetricsView> {
    return (await this.#http.json(MetricsView, { ...options, method: "GET", path: "/v1/atlas/metrics", query: { window: options.window } }))
      .data;
  }

  /** The cluster's metrics in the Prometheus text format (`GET /metrics`). */
  async prometheus(options: CallOptions = {}): Promise<string> {
    const res = await this.#http.send(
      { ...options, method: "GET", path: "/metrics", headers: { ...options.headers, accept: "text/plain" } },
      true,
    );
    return res.text();
  }

  /**
   * Every snapshot, as an async iterator, until `signal` aborts or the loop breaks. A dropped
   * connection, an `event: error` or a 5xx is followed by a new connection with `Last-Event-ID`
   * (the last snapshot's id); a 4xx (401, 403…) or `maxRetries` failures in a row throw an {@link AtlasError}.
   */
  async *subscribe(options: SubscribeOptions = {}): AsyncGenerator<MetricsStreamEvent> {
    const { signal } = options;
    let lastEventId = options.lastEventId;
    let serverRetryMs = 0;
    let failures = 0;
    while (!signal?.aborted) {
      const conn = new AbortController();
      const onAbort = () => conn.abort(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      let error: AtlasError;
      try {
        const res = await this.#http.send({
          method: "GET",
          path: "/v1/atlas/metrics/stream",
          signal: conn.signal,
          headers: { accept: "text/event-stream", ...(lastEventId === undefined ? {} : { "last-event-id": lastEventId }) },
          query: { history: lastEventId === undefined && options.history !== undefined ? options.history : undefined },
        });
        if (res.body === null) throw AtlasError.client("invalid_response", "The metrics stream has no body");
        error = AtlasError.client("connection_error", "The metrics stream ended");
        for await (const m of parseSse(res.body)) {
          if (signal?.aborted) return; // nothing after an abort, not even what one read already held
          if (m.retry !== undefined) serverRetryMs = m.retry;
          const event = parseEvent(m.event, m.data, m.id);
          if (event instanceof AtlasError) {
            error = event; // `event: error`: the server ends the stream after it
            continue;
          }
          if (event === undefined) continue;
          failures = 0;
          if (event.type === "snapshot") lastEventId = event.id;
          yield event;
        }
      } catch (err) {
        if (signal?.aborted) return;
        error = err instanceof AtlasError ? err : AtlasError.client("connection_error", String(err), { cause: err });
        if (!error.retryable) throw error;
      } finally {
        signal?.removeEventListener("abort", onAbort);
        conn.abort();
      }
      if (signal?.aborted) return;
      failures += 1;
      if (failures > (options.maxRetries ?? 10)) throw error;
      const delayMs = Math.max(options.retryDelayMs ?? 500, serverRetryMs, (error.retryAfterS ?? 0) * 1000);
      options.onReconnect?.({ attempt: failures, lastEventId, error, delayMs });
      await sleep(delayMs, signal);
    }
  }
}

/** A message of the stream as an event; an `AtlasError` for `event: error`; undefined for anything else. */
function parseEvent(event: string, data: string, id: string | undefined): MetricsStreamEvent | AtlasError | undefined {
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    throw AtlasError.client("invalid_response", `The metrics stream sent an event that is not JSON: ${data.slice(0, 100)}`);
  }
  if (event === "snapshot") {
    const snapshot = MetricsSnapshot.safeParse(json);
    if (!snapshot.success)
      throw AtlasError.client("invalid_response", `A metrics snapshot does not match its schema: ${snapshot.error.message}`);
    return { type: "snapshot", id: id ?? String(snapshot.data.seq), snapshot: snapshot.data };
  }
  if (event === "reset") {
    const reset = MetricsResetData.safeParse(json);
    if (!reset.success) throw AtlasError.client("invalid_response", `A metrics reset does not match its schema: ${reset.error.message}`);
    return { type: "reset", reset: reset.data };
  }
  if (event === "error") {
    const body = ErrorBody.safeParse(json);
    return body.success ? new AtlasError(503, body.data) : AtlasError.client("connection_error", "The metrics stream failed");
  }
  return undefined;
}

/** Waits `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
