/**
 * `SlotPool`: who may drive which context sequence ("slot") right now, and who waits.
 *
 * A slot is held by one generation at a time. Callers that find no slot wait in one FIFO queue,
 * bounded so that overload is refused early (`overloaded`, retry after a second) instead of
 * piling up; a waiter's `AbortSignal` takes it out of the queue at once.
 *
 * The seam for session affinity (KV leases, ARCHITECTURE §4): `acquire({slot})` waits for one
 * particular slot, so a caller that knows where its session's tokens live can pin it. Fencing
 * tokens and lease expiry belong to a layer above this pool.
 *
 * @module
 */
import { BusError } from "@atlas/bus";

/** Options for {@link SlotPool}. */
export interface SlotPoolOptions {
  /** Most callers waiting for a slot; one more is refused with `overloaded`. Default `4 × size`. */
  maxQueue?: number;
}

/** Options for {@link SlotPool.acquire}. */
export interface AcquireSlotOptions {
  /** Aborts waiting (the caller gets a `cancelled` error). */
  signal?: AbortSignal;
  /** Wait for this slot only (session affinity). Default: any slot. */
  slot?: number;
  /**
   * Picks among the free slots when more than one is free (all free slot numbers, least recently
   * used first). Default: the least recently used. Not called for a waiter handed a slot on release.
   */
  choose?: (free: readonly number[]) => number;
}

/** A held slot. `release` is idempotent. */
export interface SlotLease {
  readonly slot: number;
  /** Milliseconds spent waiting in the queue (0 when a slot was free). */
  readonly waitedMs: number;
  release(): void;
}

interface Waiter {
  readonly slot: number | undefined;
  readonly since: number;
  resolve(lease: SlotLease): void;
  reject(err: unknown): void;
  cleanup(): void;
}

/** A fixed set of slots with a bounded FIFO wait queue. */
export class SlotPool {
  readonly #busy: boolean[];
  readonly #lastUsed: number[];
  readonly #queue: Waiter[] = [];
  readonly #maxQueue: number;
  #clock = 0;
  #closed: BusError | undefined;

  constructor(size: number, options: SlotPoolOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`Invalid slot count "${size}": expected a positive integer`);
    const maxQueue = options.maxQueue ?? 4 * size;
    if (!Number.isSafeInteger(maxQueue) || maxQueue < 0) {
      throw new RangeError(`Invalid queue bound "${maxQueue}": expected a non-negative integer`);
    }
    this.#busy = new Array<boolean>(size).fill(false);
    this.#lastUsed = new Array<number>(size).fill(0);
    this.#maxQueue = maxQueue;
  }

  /** Number of slots. */
  get size(): number {
    return this.#busy.length;
  }

  /** Slots nobody holds. */
  get free(): number {
    return this.#busy.filter((b) => !b).length;
  }

  /** Callers waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The queue bound. */
  get maxQueue(): number {
    return this.#maxQueue;
  }

  /** Whether `slot` is held. */
  isBusy(slot: number): boolean {
    return this.#busy[slot] === true;
  }

  /**
   * Takes a free slot, or waits for one.
   *
   * @throws {BusError} `overloaded` (retry after 1 s) when the queue is full, `cancelled` when the
   * signal aborts, `bad_request` for an unknown slot, `unavailable` once the pool is closed.
   */
  acquire(options: AcquireSlotOptions = {}): Promise<SlotLease> {
    const { signal, slot } = options;
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    if (slot !== undefined && (!Number.isSafeInteger(slot) || slot < 0 || slot >= this.size)) {
      return Promise.reject(new BusError("bad_request", `Unknown slot "${slot}": this worker has ${this.size} slots`, { param: "slot" }));
    }
    const free = this.#freeSlots(slot);
    if (free.length > 0) {
      const pick = free.length === 1 || options.choose === undefined ? free[0]! : options.choose(free);
      if (!free.includes(pick)) return Promise.reject(new Error(`Slot chooser picked "${pick}", which is not free`));
      return Promise.resolve(this.#grant(pick, 0));
    }
    if (this.#queue.length >= this.#maxQueue) {
      return Promise.reject(
        new BusError("overloaded", `All ${this.size} slots are busy and ${this.#queue.length} requests are waiting`, { retryAfterS: 1 }),
      );
    }
    return new Promise<SlotLease>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#queue.indexOf(waiter);
        if (i !== -1) this.#queue.splice(i, 1);
        reject(cancelled(signal!));
      };
      const waiter: Waiter = {
        slot,
        since: performance.now(),
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener("abort", onAbort),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /**
   * Refuses new callers and rejects every waiter with `unavailable`. Held slots stay held until
   * their holders release them.
   */
  close(message = "The engine is shutting down"): void {
    this.#closed ??= new BusError("unavailable", message);
    for (const waiter of this.#queue.splice(0)) {
      waiter.cleanup();
      waiter.reject(this.#closed);
    }
  }

  #freeSlots(only: number | undefined): number[] {
    if (only !== undefined) return this.#busy[only] === true ? [] : [only];
    const free: number[] = [];
    this.#busy.forEach((busy, i) => {
      if (!busy) free.push(i);
    });
    return free.sort((a, b) => this.#lastUsed[a]! - this.#lastUsed[b]!);
  }

  #grant(slot: number, waitedMs: number): SlotLease {
    this.#busy[slot] = true;
    this.#lastUsed[slot] = ++this.#clock;
    let released = false;
    return {
      slot,
      waitedMs,
      release: () => {
        if (released) return;
        released = true;
        this.#release(slot);
      },
    };
  }

  #release(slot: number): void {
    this.#busy[slot] = false;
    this.#lastUsed[slot] = ++this.#clock;
    const i = this.#queue.findIndex((w) => w.slot === undefined || w.slot === slot);
    if (i === -1) return;
    const [waiter] = this.#queue.splice(i, 1);
    waiter!.cleanup();
    waiter!.resolve(this.#grant(slot, performance.now() - waiter!.since));
  }
}

function cancelled(signal: AbortSignal): BusError {
  return new BusError("cancelled", "The request was cancelled while waiting for a slot", { cause: signal.reason });
}
