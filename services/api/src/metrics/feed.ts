/**
 * The api's copy of the metrics service's snapshots (`<prefix>.metrics.snapshot`, contract
 * `MetricsSnapshotEvent`, sender `services/metrics/src/service.ts`): a bounded ring of the most
 * recent ones, always contiguous in `seq`, from which SSE clients resume.
 *
 * When the series breaks — a snapshot went missing on the bus, or the metrics service
 * restarted (new instance, `seq` from 1 again) — the ring is emptied and its `epoch` grows,
 * so every reader learns of the break instead of skipping over it.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import { type MetricsSnapshot, MetricsSnapshotEvent } from "@atlas/contracts";

/** What a reader resuming after `seq` gets. */
export type Resume =
  | { kind: "ok"; snapshots: MetricsSnapshot[] }
  /** The snapshots after `seq` are not all here any more (or never were): start again. */
  | { kind: "reset"; reason: "gone" | "unknown"; oldest: number | null; latest: number | null };

/** Options for {@link SnapshotFeed}. */
export interface SnapshotFeedOptions {
  /** Snapshots kept; default 300 (5 min at the default 1 s interval). */
  capacity?: number;
  /** The clock (epoch ms); default `Date.now`. */
  now?: () => number;
}

/** A bounded, contiguous ring of recent snapshots, fed by the bus or by hand (tests). */
export class SnapshotFeed {
  readonly capacity: number;
  readonly #now: () => number;
  readonly #listeners = new Set<() => void>();
  #ring: MetricsSnapshot[] = [];
  #epoch = 0;
  #receivedAt: number | undefined;
  #sub: ReturnType<Bus["subscribe"]> | undefined;

  constructor(options: SnapshotFeedOptions = {}) {
    this.capacity = Math.max(1, options.capacity ?? 300);
    this.#now = options.now ?? Date.now;
  }

  /** Subscribes to the snapshot subject. */
  start(bus: Bus): void {
    this.#sub ??= bus.subscribe(MetricsSnapshotEvent, (s) => this.push(s), {});
  }

  /** Stops listening to the bus and wakes the readers (so they can finish). */
  close(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    this.#notify();
  }

  /** Grows whenever the series broke and the ring was emptied. */
  get epoch(): number {
    return this.#epoch;
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
    if (last !== undefined && (last.instance !== s.instance || s.seq !== last.seq + 1)) {
      this.#ring = [];
      this.#epoch += 1;
    }
    this.#ring.push(s);
    if (this.#ring.length > this.capacity) this.#ring.splice(0, this.#ring.length - this.capacity);
    this.#receivedAt = this.#now();
    this.#notify();
  }

  /** The snapshots after `seq` (all of them, or a reset when some are no longer kept). */
  resume(seq: number): Resume {
    const oldest = this.oldest;
    const latest = this.latest;
    if (oldest === undefined || latest === undefined) return { kind: "reset", reason: "unknown", oldest: null, latest: null };
    if (seq < oldest.seq - 1 || seq > latest.seq) return { kind: "reset", reason: "gone", oldest: oldest.seq, latest: latest.seq };
    return { kind: "ok", snapshots: this.#ring.slice(seq - oldest.seq + 1) };
  }

  /** The newest `count` snapshots, oldest first. */
  recent(count: number): MetricsSnapshot[] {
    return count <= 0 ? [] : this.#ring.slice(-count);
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
