/**
 * The snapshot history: a bounded ring of the snapshots this metrics service published, from
 * which `<prefix>.metrics.history` (contract `MetricsHistory`) answers. The service owns `seq`,
 * so the ring is always contiguous: every api instance replays from it, whether or not it saw
 * those snapshots itself (an SSE client resuming with `Last-Event-ID` after an api restart, or on
 * another api behind a load balancer).
 *
 * @module
 */
import {
  METRICS_HISTORY_CAPACITY,
  METRICS_HISTORY_MAX_BYTES,
  type MetricsHistoryOk,
  type MetricsHistoryRequest,
  type MetricsHistoryReset,
  type MetricsSnapshot,
} from "@atlas/contracts";

/** Options for {@link SnapshotHistory}. */
export interface SnapshotHistoryOptions {
  /** Snapshots kept; default `METRICS_HISTORY_CAPACITY`. */
  capacity?: number;
  /** Most bytes of snapshots (JSON) in one answer; default `METRICS_HISTORY_MAX_BYTES`. */
  maxBytes?: number;
}

/** A reply without the instance (the service adds its own). */
export type HistoryAnswer = Omit<MetricsHistoryOk, "instance"> | Omit<MetricsHistoryReset, "instance">;

/** A bounded ring of published snapshots, contiguous in `seq`. */
export class SnapshotHistory {
  readonly capacity: number;
  readonly maxBytes: number;
  #ring: Array<{ snapshot: MetricsSnapshot; bytes: number }> = [];

  constructor(options: SnapshotHistoryOptions = {}) {
    this.capacity = Math.max(1, options.capacity ?? METRICS_HISTORY_CAPACITY);
    this.maxBytes = Math.max(1, options.maxBytes ?? METRICS_HISTORY_MAX_BYTES);
  }

  /** The oldest `seq` kept, or null before the first snapshot. */
  get oldest(): number | null {
    return this.#ring[0]?.snapshot.seq ?? null;
  }

  /** The newest `seq`, or null before the first snapshot. */
  get latest(): number | null {
    return this.#ring[this.#ring.length - 1]?.snapshot.seq ?? null;
  }

  /** Snapshots kept. */
  get size(): number {
    return this.#ring.length;
  }

  /**
   * Keeps a snapshot just published. The series is the caller's own, so it must go on by one
   * (`seq` 1 first); anything else is a bug in the caller, not something to paper over.
   */
  push(snapshot: MetricsSnapshot): void {
    const expected = (this.latest ?? 0) + 1;
    if (snapshot.seq !== expected) throw new Error(`Snapshot ${snapshot.seq} does not follow ${expected - 1}`);
    this.#ring.push({ snapshot, bytes: Buffer.byteLength(JSON.stringify(snapshot)) });
    if (this.#ring.length > this.capacity) this.#ring.splice(0, this.#ring.length - this.capacity);
  }

  /**
   * The snapshots after `after` (or the newest `limit` when `after` is null), oldest first: at
   * most `limit`, and no more than `maxBytes` of them (but always one when any follow), with
   * `more` when others follow. A reset when some after `after` are no longer kept, or when
   * `after` is ahead of the newest.
   */
  get(request: MetricsHistoryRequest): HistoryAnswer {
    const oldest = this.oldest;
    const latest = this.latest;
    const range = { oldest, latest };
    let after = request.after;
    if (after === null) after = latest === null ? 0 : Math.max(latest - request.limit, (oldest ?? 1) - 1);
    const first = oldest ?? 1; // before the first snapshot, the series starts at 1
    if (after < first - 1 || after > (latest ?? 0)) return { kind: "reset", reason: "gone", ...range };
    const start = after - first + 1;
    const end = Math.min(this.#ring.length, start + request.limit);
    const snapshots: MetricsSnapshot[] = [];
    let bytes = 0;
    for (let i = start; i < end; i++) {
      const e = this.#ring[i] as { snapshot: MetricsSnapshot; bytes: number };
      if (snapshots.length > 0 && bytes + e.bytes > this.maxBytes) break;
      snapshots.push(e.snapshot);
      bytes += e.bytes;
    }
    return { kind: "ok", ...range, snapshots, more: start + snapshots.length < this.#ring.length };
  }
}
