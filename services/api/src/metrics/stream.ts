/**
 * One SSE client's stream of metrics snapshots (`GET /v1/atlas/metrics/stream`). The api relays:
 * the metrics service owns the series (`seq`) and its history (`MetricsHistory`), this api's
 * {@link SnapshotFeed} caches the live snapshots it received.
 *
 * The hand-over from the replay to the live snapshots neither skips nor repeats one:
 *
 * 1. the stream listens to the cache first (whose NATS subscription precedes any request this api
 *    makes), so every snapshot published after the metrics service answered reaches the cache;
 * 2. it asks the metrics service for the snapshots after the client's `Last-Event-ID` (or for the
 *    newest ones), and adopts its instance and `seq` as the client's position;
 * 3. it then sends whatever follows that position, read from the cache when the cache holds it
 *    and from the metrics service again when it cannot (a snapshot missing here, another
 *    instance's series, a client slower than the cache is long), so the position only ever moves
 *    by one `seq` within one series: older ones are dropped as duplicates.
 *
 * A client whose snapshots are gone, or whose series broke (the metrics service restarted: new
 * instance, `seq` from 1), gets `event: reset` and then the new start; when the metrics service
 * does not answer a stream already open, `event: error` (OpenAI's error body) and the stream
 * ends, so the client reconnects with its `Last-Event-ID`.
 *
 * @module
 */
import { METRICS_HISTORY_CAPACITY, type MetricsHistoryReply, type MetricsHistoryRequest, type MetricsSnapshot } from "@atlas/contracts";
import type { SSEReplyInterface } from "@fastify/sse";
import { toApiError } from "../errors.ts";
import type { SnapshotFeed } from "./feed.ts";

/** Asks the metrics service for its history (`MetricsHistory`). */
export type AskHistory = (request: MetricsHistoryRequest) => Promise<MetricsHistoryReply>;

/** Why a client is told to start again. */
export type ResetReason = "gone" | "unknown" | "discontinuity";

/** What goes to the client next. */
type Out = MetricsSnapshot | { reset: ResetReason; oldest: number | null; latest: number | null };

/** Options for {@link SnapshotStream}. */
export interface SnapshotStreamOptions {
  /** The client's `Last-Event-ID` (or `?last_event_id=`), if it resumes. */
  lastEventId: string | undefined;
  /** A new stream starts with the newest `history` snapshots (at least one). */
  history: number;
  /** For the error event's message. */
  requestId: string;
}

/** One client's stream: {@link open} (before the headers), then {@link start}. */
export class SnapshotStream {
  readonly #feed: SnapshotFeed;
  readonly #sse: SSEReplyInterface;
  readonly #ask: AskHistory;
  readonly #options: SnapshotStreamOptions;
  /** The client's series and the last `seq` it has, or will have once `#queue` is sent. */
  #cursor = { instance: "", seq: 0 };
  /** The last id sent to this client. */
  #sent: string | undefined;
  readonly #queue: Out[] = [];
  /** Snapshots the cache received since this stream listens. */
  #changes = 0;
  /** `#changes` when the metrics service last said nothing more follows (-1: ask when needed). */
  #askedAt = -1;
  #off: (() => void) | undefined;
  #started = false;
  #running = false;
  #again = false;

  constructor(feed: SnapshotFeed, sse: SSEReplyInterface, ask: AskHistory, options: SnapshotStreamOptions) {
    this.#feed = feed;
    this.#sse = sse;
    this.#ask = ask;
    this.#options = options;
  }

  /**
   * Listens to the cache, then asks the metrics service where this client starts. Rejects when
   * it does not answer (the route answers 503 then, before any header).
   */
  async open(): Promise<void> {
    this.#off = this.#feed.onChange(() => {
      this.#changes += 1;
      if (this.#started) void this.#pump();
    });
    try {
      await this.#begin();
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Sends what {@link open} found, then follows. */
  start(): void {
    this.#started = true;
    this.#sse.onClose(() => this.close());
    void this.#pump();
  }

  /** Stops following the cache. */
  close(): void {
    this.#off?.();
    this.#off = undefined;
  }

  async #begin(): Promise<void> {
    const id = this.#options.lastEventId;
    const valid = id !== undefined && /^\d{1,15}$/.test(id);
    if (valid) {
      const after = Number(id);
      const r = await this.#ask({ after, limit: METRICS_HISTORY_CAPACITY });
      if (r.kind === "ok") return this.#take(r, after);
      this.#queue.push({ reset: r.reason, oldest: r.oldest, latest: r.latest });
    }
    // A new start: the newest snapshots.
    const r = await this.#ask({ after: null, limit: Math.max(1, this.#options.history) });
    if (id !== undefined && !valid) this.#queue.push({ reset: "unknown", oldest: r.oldest, latest: r.latest });
    if (r.kind === "ok") this.#take(r, (r.snapshots[0]?.seq ?? (r.latest ?? 0) + 1) - 1);
    else this.#cursor = { instance: r.instance, seq: r.latest ?? 0 };
  }

  /** Adopts the metrics service's answer: its series, the snapshots after `after`. */
  #take(r: Extract<MetricsHistoryReply, { kind: "ok" }>, after: number): void {
    this.#cursor = { instance: r.instance, seq: after };
    this.#queue.push(...r.snapshots);
    this.#askedAt = r.more ? -1 : this.#changes;
  }

  /** What follows the client's position: from the cache, else from the metrics service; undefined: wait for the next snapshot. */
  async #next(): Promise<Out[] | undefined> {
    const { instance, seq } = this.#cursor;
    const cached = this.#feed.after(instance, seq);
    if (cached.kind === "ok") return cached.snapshots.length > 0 ? cached.snapshots : undefined;
    // The metrics service already said nothing follows, and no snapshot came since: wait for one.
    if (this.#askedAt === this.#changes) return undefined;
    const changes = this.#changes;
    const r = await this.#ask({ after: seq, limit: METRICS_HISTORY_CAPACITY });
    if (r.instance !== instance) {
      // The metrics service restarted: follow its new series from its start.
      this.#cursor = { instance: r.instance, seq: Math.max(0, (r.oldest ?? 1) - 1) };
      this.#askedAt = -1;
      return [{ reset: "discontinuity", oldest: r.oldest, latest: r.latest }];
    }
    if (r.kind === "reset") {
      // This client fell further behind than the metrics service keeps: from the newest on.
      this.#cursor = { instance, seq: Math.max(0, (r.latest ?? 1) - 1) };
      this.#askedAt = -1;
      return [{ reset: r.reason, oldest: r.oldest, latest: r.latest }];
    }
    // The contract promises the ones right after `seq`; anything else would never move the position.
    const first = r.snapshots[0];
    if (first !== undefined && first.seq !== seq + 1) throw new Error(`History after ${seq} began at ${first.seq}`);
    this.#askedAt = r.more ? -1 : changes;
    return r.snapshots;
  }

  /** The single writer: sends in order, so replayed and live snapshots never interleave. */
  async #pump(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      for (;;) {
        if (!this.#sse.isConnected) return this.close();
        const out = this.#queue.shift();
        if (out !== undefined) {
          await this.#write(out);
          continue;
        }
        this.#again = false;
        let next: Out[] | undefined;
        try {
          next = await this.#next();
        } catch (err) {
          await this.#fail(err);
          return;
        }
        if (next !== undefined) this.#queue.push(...next);
        else if (!this.#again) return;
      }
    } catch {
      // The client went away mid-write; its close handler cleans up.
    } finally {
      this.#running = false;
    }
  }

  async #write(out: Out): Promise<void> {
    if ("reset" in out) {
      const data = {
        reason: out.reset,
        last_event_id: this.#sent ?? this.#options.lastEventId ?? null,
        oldest: out.oldest,
        latest: out.latest,
      };
      await this.#sse.send({ event: "reset", data });
      return;
    }
    const { instance, seq } = this.#cursor;
    // Only the next one of the client's series: anything else was sent already (or is not its series).
    if (out.instance !== instance || out.seq !== seq + 1) return;
    this.#cursor = { instance, seq: out.seq };
    this.#sent = String(out.seq);
    await this.#sse.send({ id: this.#sent, event: "snapshot", data: out });
  }

  /** The metrics service did not answer: say so, and end the stream (the client resumes later). */
  async #fail(err: unknown): Promise<void> {
    this.close();
    await this.#sse.send({ event: "error", data: toApiError(err, this.#options.requestId).toBody() }).catch(() => {});
    this.#sse.close();
  }
}
