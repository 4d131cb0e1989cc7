/**
 * The api's relay cache of the metrics service's live snapshots (`<prefix>.metrics.snapshot`,
 * contract `MetricsSnapshotEvent`, sender `services/metrics/src/service.ts`): one subscription per
 * api instance, and a small ring of the most recent snapshots, always contiguous in `seq`, from
 * which the SSE streams (`stream.ts`) follow the live series.
 *
 * It is not the history: the metrics service owns `seq` and keeps the snapshots it published
 * (`MetricsHistory`). A stream asks it whenever this cache cannot say what comes next — when a
 * client connects or resumes, when a snapshot went missing here, when the series is another
 * instance's, or when a slow client fell behind the ring.
 *
 * When the series breaks — a snapshot went missing on the bus, or the metrics service restarted
 * (new instance, `seq` from 1 again) — the ring is emptied and starts again with the new one.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import { type MetricsSnapshot, MetricsSnapshotEvent } from "@atlas/contracts";

/** What the cache says about the snapshots after `seq` of `instance`'s series. */
export type CacheRead =
  /** Every snapshot it has after `seq`: none when `seq` is the newest, or when the cache is behind it. */
  | { kind: "ok"; snapshots: MetricsSnapshot[] }
  /** It cannot say: empty, another series, or what follows `seq` is no longer (or never was) here. */
  | { kind: "miss" };

/** Options for {@link SnapshotFeed}. */
export interface SnapshotFeedOptions {
  /** Snapshots kept; default 60 (1 min at the default 1 s interval). */
  capacity?: number;
  /** The clock (epoch ms); default `Date.now`. */
  now?: () => number;
}

/** A bounded, contiguous ring of recent live snapshots, fed by the bus or by hand (tests). */
export class SnapshotFeed {
  readonly capacity: number;
  readonly #now: () => number;
  readonly #listeners = new Set<() => void>();
  #ring: MetricsSnapshot[] = [];
  #receivedAt: number | undefined;
  #sub: ReturnType<Bus["subscribe"]> | undefined;

  constructor(options: SnapshotFeedOptions = {}) {
    this.capacity = Math.max(1, options.capacity ?? 60);
    this.#now = options.now ?? Date.now;
  }

  /**
   * Subscribes to the snapshot subject. Every later request on the same connection (a
   * `MetricsHistory` call) reaches nats-server after the subscription, so no snapshot published
   * after the metrics service answered can pass this cache by.
   */
  start(bus: Bus): void {
    this.#sub ??= bus.subscribe(MetricsSnapshotEvent, (s) => this.push(s), {});
  }

  /** Stops listening to the bus and wakes the readers (so they can finish). */
  close(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    this.#notify();
  }

  /** The newest snapshot, if any. */
  get latest(): MetricsSnapshot | undefined {
    return this.#ring[this.#ring.length - 1];
  }

  /** The oldest snapshot still kept, if any. */
  get oldest(): MetricsSnapshot | undefined {
    return this.#ring[0];
  }

  /** ms since the last snapshot arrived (Infinity before the first). */
  get ageMs(): number {
    return this.#receivedAt === undefined ? Number.POSITIVE_INFINITY : this.#now() - this.#receivedAt;
  }

  /** Adds a snapshot; a break in the series empties the ring first. */
  push(s: MetricsSnapshot): void {
    const last = this.latest;
    if (last !== undefined && last.instance === s.instance && s.seq <= last.seq) return; // a duplicate
    if (last !== undefined && (last.instance !== s.instance || s.seq !== last.seq + 1)) this.#ring = [];
    this.#ring.push(s);
    if (this.#ring.length > this.capacity) this.#ring.splice(0, this.#ring.length - this.capacity);
    this.#receivedAt = this.#now();
    this.#notify();
  }

  /** The snapshots after `seq` of `instance`'s series, as far as this cache can tell. */
  after(instance: string, seq: number): CacheRead {
    const oldest = this.oldest;
    const latest = this.latest;
    if (oldest === undefined || latest === undefined || latest.instance !== instance || seq < oldest.seq - 1) return { kind: "miss" };
    // Past the newest: the cache is behind the caller (it got them from the metrics service).
    if (seq >= latest.seq) return { kind: "ok", snapshots: [] };
    return { kind: "ok", snapshots: this.#ring.slice(seq - oldest.seq + 1) };
  }

  /** Calls `listener` after every new snapshot (and on close); returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #notify(): void {
    for (const l of this.#listeners) l();
  }
}
