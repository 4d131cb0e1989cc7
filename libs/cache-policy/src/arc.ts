/**
 * The ARC variants of `adaptive` (Megiddo & Modha, FAST 2003), adapted to entries of different
 * byte sizes and to victims restricted to a candidate set.
 *
 * - T1 holds entries used once since they were admitted, T2 entries used at least twice. B1
 *   and B2 are *ghost* lists: keys (with size and use count, no data) recently evicted from T1
 *   and T2.
 * - A hit on a B1 ghost means T1 was too small: the byte target `p` for T1 grows by the ghost's
 *   size × max(1, |B2|/|B1|) (sizes in bytes); a hit on a B2 ghost shrinks it likewise. The
 *   ghost comes back into T2 with its use count.
 * - The victim comes from T1 when T1 holds more than `p` bytes (not counting the entry being
 *   admitted), otherwise from T2. Among candidates: the preferred list's best candidate, else
 *   the other list's.
 * - Ghosts are trimmed so that T1 + B1 ≤ c and T1 + T2 + B1 + B2 ≤ 2c bytes, c being the
 *   budget (when not given: the most bytes ever resident).
 *
 * Within a list, the order is `lru` (classic ARC) or size-aware: `gdsf` ranks by
 * L + uses × cost ÷ bytes with the list's own inflation value L (GreedyDual-Size-Frequency,
 * Cherkasova 1998), so of two entries used alike the one that frees more bytes goes first.
 *
 * @module
 */
import { type HeapEntry, MinHeap, ranksBefore } from "./heap.ts";
import { type CachePolicy, checkCost, checkSize, lowestCandidate, PolicyName, type TouchOptions, type VictimOptions } from "./policy.ts";

/** How entries are ordered inside one ARC list. */
export type ArcListOrder = "lru" | "gds" | "gdsf";

/** Options of {@link createArcPolicy}. */
export interface ArcOptions {
  /** The tier's byte budget c. Default: the most bytes ever resident (learned). */
  readonly budgetBytes?: number;
  /** Order inside T1 (used once). Default `lru`. */
  readonly recency?: ArcListOrder;
  /** Order inside T2 (used twice or more). Default `lru`. */
  readonly frequency?: ArcListOrder;
}

interface ArcEntry extends HeapEntry {
  sizeBytes: number;
  cost: number;
  count: number;
  /** 1: T1 (recency), 2: T2 (frequency). */
  list: 1 | 2;
}

interface Ghost {
  readonly sizeBytes: number;
  readonly count: number;
}

/** One of T1 / T2: its entries ranked in a heap, its bytes and inflation value. */
class ArcList {
  readonly entries = new Map<string, ArcEntry>();
  readonly heap = new MinHeap<ArcEntry>();
  bytes = 0;
  inflation = 0;
  constructor(readonly order: ArcListOrder) {}

  add(entry: ArcEntry): void {
    const uses = this.order === "gdsf" ? entry.count : 1;
    entry.priority = this.order === "lru" ? 0 : this.inflation + (uses * entry.cost) / Math.max(entry.sizeBytes, 1);
    this.entries.set(entry.key, entry);
    this.heap.push(entry);
    this.bytes += entry.sizeBytes;
  }

  delete(entry: ArcEntry, evicted: boolean): void {
    if (evicted && this.order !== "lru") this.inflation = Math.max(this.inflation, this.heap.peek()!.priority);
    this.entries.delete(entry.key);
    this.heap.delete(entry);
    this.bytes -= entry.sizeBytes;
  }

  /** The best victim other than `incoming`. */
  lowest(incoming: string | undefined): ArcEntry | undefined {
    const top = this.heap.peek();
    if (top === undefined || top.key !== incoming) return top;
    const left = this.heap.at(1);
    const right = this.heap.at(2);
    if (left === undefined || right === undefined) return left ?? right;
    return ranksBefore(left, right) ? left : right;
  }
}

/** A size-aware ARC policy. */
export class ArcPolicy implements CachePolicy {
  readonly name = PolicyName.adaptive;
  readonly algorithm: string;
  readonly #t1: ArcList;
  readonly #t2: ArcList;
  /** Oldest first. */
  readonly #b1 = new Map<string, Ghost>();
  readonly #b2 = new Map<string, Ghost>();
  #b1Bytes = 0;
  #b2Bytes = 0;
  #p = 0;
  #clock = 0;
  readonly #budget: number | undefined;
  #peak = 0;

  constructor(options: ArcOptions = {}) {
    if (options.budgetBytes !== undefined && !(options.budgetBytes > 0)) {
      throw new RangeError(`Cannot use a budget of ${options.budgetBytes} bytes: it must be > 0`);
    }
    this.#budget = options.budgetBytes;
    const recency = options.recency ?? "lru";
    const frequency = options.frequency ?? "lru";
    this.#t1 = new ArcList(recency);
    this.#t2 = new ArcList(frequency);
    this.algorithm = arcAlgorithm(recency, frequency);
  }

  get size(): number {
    return this.#t1.entries.size + this.#t2.entries.size;
  }

  get bytes(): number {
    return this.#t1.bytes + this.#t2.bytes;
  }

  /** The adaptive byte target for T1, for tests and reports. */
  get target(): number {
    return this.#p;
  }

  /** Entries in the four lists, for tests and reports. */
  get lists(): { t1: number; t2: number; b1: number; b2: number } {
    return { t1: this.#t1.entries.size, t2: this.#t2.entries.size, b1: this.#b1.size, b2: this.#b2.size };
  }

  touch(key: string, sizeBytes: number, options: TouchOptions = {}): boolean {
    checkSize(key, sizeBytes);
    const cost = options.cost ?? 1;
    checkCost(key, cost);
    const seq = ++this.#clock;
    const resident = this.#lookup(key);
    if (resident !== undefined) {
      (resident.list === 1 ? this.#t1 : this.#t2).delete(resident, false);
      resident.sizeBytes = sizeBytes;
      resident.cost = cost;
      resident.count += 1;
      resident.seq = seq;
      resident.list = 2;
      this.#t2.add(resident);
      this.#trim();
      return true;
    }
    const c = this.#capacity(sizeBytes);
    const g1 = this.#b1.get(key);
    const g2 = this.#b2.get(key);
    let count = 1;
    let list: 1 | 2 = 1;
    if (g1 !== undefined) {
      this.#p = Math.min(c, this.#p + sizeBytes * Math.max(1, this.#b2Bytes / Math.max(this.#b1Bytes, 1)));
      this.#b1.delete(key);
      this.#b1Bytes -= g1.sizeBytes;
      count = g1.count + 1;
      list = 2;
    } else if (g2 !== undefined) {
      this.#p = Math.max(0, this.#p - sizeBytes * Math.max(1, this.#b1Bytes / Math.max(this.#b2Bytes, 1)));
      this.#b2.delete(key);
      this.#b2Bytes -= g2.sizeBytes;
      count = g2.count + 1;
      list = 2;
    }
    const entry: ArcEntry = { key, sizeBytes, cost, count, list, priority: 0, seq, pos: -1 };
    (list === 1 ? this.#t1 : this.#t2).add(entry);
    this.#trim();
    return false;
  }

  has(key: string): boolean {
    return this.#t1.entries.has(key) || this.#t2.entries.has(key);
  }

  victim(options: VictimOptions = {}): string | undefined {
    const { candidates, incoming } = options;
    const admitted = incoming === undefined ? undefined : this.#t1.entries.get(incoming);
    const t1Bytes = this.#t1.bytes - (admitted?.sizeBytes ?? 0);
    const preferred = t1Bytes > 0 && t1Bytes > this.#p ? 1 : 2;
    if (candidates !== undefined) {
      return lowestCandidate(
        candidates,
        incoming,
        (k) => this.#lookup(k),
        (a, b) => (a.list === b.list ? ranksBefore(a, b) : a.list === preferred),
      );
    }
    const [first, second] = preferred === 1 ? [this.#t1, this.#t2] : [this.#t2, this.#t1];
    return (first.lowest(incoming) ?? second.lowest(incoming))?.key;
  }

  evict(key: string): boolean {
    const entry = this.#lookup(key);
    if (entry === undefined) return false;
    const ghost: Ghost = { sizeBytes: entry.sizeBytes, count: entry.count };
    if (entry.list === 1) {
      this.#t1.delete(entry, true);
      this.#b1.set(key, ghost);
      this.#b1Bytes += entry.sizeBytes;
    } else {
      this.#t2.delete(entry, true);
      this.#b2.set(key, ghost);
      this.#b2Bytes += entry.sizeBytes;
    }
    this.#trim();
    return true;
  }

  remove(key: string): boolean {
    const g1 = this.#b1.get(key);
    if (g1 !== undefined) {
      this.#b1.delete(key);
      this.#b1Bytes -= g1.sizeBytes;
    }
    const g2 = this.#b2.get(key);
    if (g2 !== undefined) {
      this.#b2.delete(key);
      this.#b2Bytes -= g2.sizeBytes;
    }
    const entry = this.#lookup(key);
    if (entry === undefined) return false;
    (entry.list === 1 ? this.#t1 : this.#t2).delete(entry, false);
    return true;
  }

  *keys(): IterableIterator<string> {
    yield* this.#t1.entries.keys();
    yield* this.#t2.entries.keys();
  }

  #lookup(key: string): ArcEntry | undefined {
    return this.#t1.entries.get(key) ?? this.#t2.entries.get(key);
  }

  /** The budget c, learning it from the peak residency when not given. */
  #capacity(incomingBytes = 0): number {
    if (this.#budget !== undefined) return this.#budget;
    this.#peak = Math.max(this.#peak, this.bytes + incomingBytes);
    return this.#peak;
  }

  /** Drops the oldest ghosts until T1 + B1 ≤ c and everything ≤ 2c. */
  #trim(): void {
    const c = this.#capacity();
    const total = (): number => this.bytes + this.#b1Bytes + this.#b2Bytes;
    while (this.#b1.size > 0 && this.#t1.bytes + this.#b1Bytes > c) this.#b1Bytes -= dropOldest(this.#b1);
    while (this.#b2.size > 0 && total() > 2 * c) this.#b2Bytes -= dropOldest(this.#b2);
    while (this.#b1.size > 0 && total() > 2 * c) this.#b1Bytes -= dropOldest(this.#b1);
  }
}

function arcAlgorithm(recency: ArcListOrder, frequency: ArcListOrder): string {
  if (recency === "lru" && frequency === "lru") return "arc";
  if (recency === "gds" && frequency !== "lru") return `arc-${frequency}`;
  return `arc(t1=${recency},t2=${frequency})`;
}

/** Deletes the oldest ghost and returns its size. */
function dropOldest(ghosts: Map<string, Ghost>): number {
  const [key, ghost] = ghosts.entries().next().value as [string, Ghost];
  ghosts.delete(key);
  return ghost.sizeBytes;
}

/** Creates an ARC policy (classic with the default options, size-aware with `gdsf` lists). */
export function createArcPolicy(options: ArcOptions = {}): CachePolicy {
  return new ArcPolicy(options);
}
