/**
 * Write-behind lease records. The leader answers a grant from memory and writes what changed
 * to KV in one batch per flush (the scheduler flushes on every tick, 250 ms), and only for
 * leases older than `minAgeMs` (default 1 s): a lease that ends before then never touches KV at
 * all, which is what almost every request does. KV holds the long-running leases.
 *
 * Records are keyed by slot (`lease.<worker>.<slot>`), not by lease: a slot has at most one live
 * lease, a new lease overwrites the slot's record, and the bucket keeps one message per slot
 * (history 1), so its size is bounded by the pool, not by the number of requests.
 *
 * Why this keeps the guarantees (docs/scheduler.md, "Durability and failover"):
 * - fencing tokens come from blocks reserved in KV *before* use, so a new leader never
 *   reissues a token, whether or not the lease that carried it was written;
 * - a lease the new leader does not know is visible in the heartbeats: its slot is reported
 *   busy under a token this leader never granted, and stays out of the pool until idle;
 * - a lease the new leader restores although it ended is released by the first heartbeat that
 *   shows its slot idle at or past its token (`Pool.heartbeat`).
 *
 * @module
 */
import type { Lease } from "@atlas/contracts";

/** Where flushed records go (the scheduler's `SchedulerStore`). */
export interface LeaseSink {
  /** Writes the record of the lease that holds a slot now. */
  putLease(lease: Lease): Promise<void>;
  /** Removes a slot's record (no lease holds it). */
  deleteSlot(workerId: string, slot: number): Promise<void>;
}

/** What a flush did, for logs and tests. */
export interface FlushResult {
  put: number;
  deleted: number;
  /** Slots whose lease began and ended between two flushes: nothing was written for them. */
  skipped: number;
  failed: number;
}

/** The newest change of one slot: the lease that holds it, or null when none does. */
interface Change {
  workerId: string;
  slot: number;
  lease: Lease | null;
}

/** Buffers lease changes and writes them in batches, one record per slot. */
export class LeaseJournal {
  readonly #sink: LeaseSink;
  readonly #minAgeMs: number;
  /** Changes since the last flush, by slot key (the newest change wins). */
  readonly #pending = new Map<string, Change>();
  /** Slot keys whose record is in KV now. */
  readonly #written = new Set<string>();
  /** The slot key of every lease recorded and not yet forgotten. */
  readonly #slotOf = new Map<string, { key: string; workerId: string; slot: number }>();
  #flushing: Promise<FlushResult> | undefined;

  constructor(sink: LeaseSink, options: { minAgeMs?: number } = {}) {
    this.#sink = sink;
    this.#minAgeMs = options.minAgeMs ?? 1000;
  }

  /** A lease was granted or renewed: its slot's record is written at a later flush. */
  record(lease: Lease): void {
    const where = { key: `${lease.worker_id}.${lease.slot}`, workerId: lease.worker_id, slot: lease.slot };
    this.#slotOf.set(lease.lease_id, where);
    this.#pending.set(where.key, { workerId: where.workerId, slot: where.slot, lease: { ...lease } });
  }

  /** A lease restored from KV (a new leader): its slot's record is there, to be deleted when it ends. */
  adopt(lease: Lease): void {
    const where = { key: `${lease.worker_id}.${lease.slot}`, workerId: lease.worker_id, slot: lease.slot };
    this.#slotOf.set(lease.lease_id, where);
    this.#written.add(where.key);
  }

  /** A lease ended (released, expired, revoked): its slot's record goes, unless a newer lease took the slot. */
  forget(leaseId: string): void {
    const where = this.#slotOf.get(leaseId);
    if (where === undefined) return;
    this.#slotOf.delete(leaseId);
    const newer = this.#pending.get(where.key)?.lease;
    if (newer !== undefined && newer !== null && newer.lease_id !== leaseId) return;
    this.#pending.set(where.key, { workerId: where.workerId, slot: where.slot, lease: null });
  }

  /** Changes not yet written. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Whether a flush is in flight. */
  get busy(): boolean {
    return this.#flushing !== undefined;
  }

  /**
   * Writes every pending change, but a lease granted less than `minAgeMs` before `now` waits
   * for a later flush; concurrent calls share one flush. A failed write is kept for the next
   * flush (unless a newer change replaced it meanwhile).
   */
  flush(now = Date.now()): Promise<FlushResult> {
    return this.#flushing ?? this.#start(now, this.#minAgeMs);
  }

  /**
   * Writes every pending change, young leases too, once any flush in flight has ended (whose
   * batch was taken before the latest changes): a leader that stops hands the next one an
   * exact table. Call it once nothing records any more.
   */
  async drain(): Promise<FlushResult> {
    while (this.#flushing !== undefined) await this.#flushing;
    return this.#start(Date.now(), 0);
  }

  #start(now: number, minAgeMs: number): Promise<FlushResult> {
    const batch = new Map<string, Change>();
    for (const [key, change] of this.#pending) {
      if (change.lease !== null && now - change.lease.granted_at < minAgeMs) continue;
      batch.set(key, change);
      this.#pending.delete(key);
    }
    const run = async (): Promise<FlushResult> => {
      const result: FlushResult = { put: 0, deleted: 0, skipped: 0, failed: 0 };
      await Promise.all(
        [...batch].map(async ([key, change]) => {
          try {
            if (change.lease !== null) {
              await this.#sink.putLease(change.lease);
              this.#written.add(key);
              result.put += 1;
            } else if (this.#written.has(key)) {
              await this.#sink.deleteSlot(change.workerId, change.slot);
              this.#written.delete(key);
              result.deleted += 1;
            } else result.skipped += 1;
          } catch {
            result.failed += 1;
            if (!this.#pending.has(key)) this.#pending.set(key, change);
          }
        }),
      );
      return result;
    };
    this.#flushing = run().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }
}
