/**
 * The engine behind `lfu` and the GDSF variant of `adaptive`: a priority per entry, the lowest
 * evicted first (ties: least recently used first), kept in an indexed heap.
 *
 * - value `frequency` (LFU): priority = uses while resident.
 * - value `frequency-per-byte` (GDSF, Cherkasova 1998): priority = uses × cost ÷ bytes, so of
 *   two entries used as often, the one that frees more bytes per unit of miss cost goes first.
 *
 * Aging, so that an entry that was hot once does not stay forever:
 * - `dynamic` (LFU-DA / GreedyDual): a global inflation value L is added to the priority an
 *   entry gets when it is inserted or hit; each eviction raises L to the lowest priority in the
 *   cache. Entries that are not used again fall behind newcomers as L climbs. No parameter.
 * - `halving`: every `halvingPeriod` touches all use counts are halved (an O(n) rebuild).
 *
 * @module
 */
import { type HeapEntry, MinHeap, ranksBefore } from "./heap.ts";
import {
  type CachePolicy,
  checkCost,
  checkSize,
  lowestCandidate,
  type PolicyName,
  type TouchOptions,
  type VictimOptions,
} from "./policy.ts";

/** How an entry's priority grows with its use. */
export type GreedyDualValue = "frequency" | "frequency-per-byte";

/** How priorities age. */
export type GreedyDualAging = "dynamic" | "halving";

/** Options of {@link GreedyDualPolicy}. */
export interface GreedyDualOptions {
  /** The strategy name the policy reports. */
  readonly name: PolicyName;
  /** The algorithm it reports, e.g. `lfu-halving`. */
  readonly algorithm: string;
  /** How priority grows with use. */
  readonly value: GreedyDualValue;
  /** How priorities age. */
  readonly aging: GreedyDualAging;
  /** Touches between two halvings (aging `halving`). */
  readonly halvingPeriod?: number;
}

interface GdEntry extends HeapEntry {
  sizeBytes: number;
  cost: number;
  /** Uses while resident (halved over time under `halving` aging). */
  count: number;
}

/** A priority-ranked policy: LFU with aging, or GDSF. */
export class GreedyDualPolicy implements CachePolicy {
  readonly name: PolicyName;
  readonly algorithm: string;
  readonly #options: GreedyDualOptions;
  readonly #period: number;
  readonly #entries = new Map<string, GdEntry>();
  readonly #heap = new MinHeap<GdEntry>();
  #bytes = 0;
  #clock = 0;
  /** The inflation value of dynamic aging. */
  #inflation = 0;

  constructor(options: GreedyDualOptions) {
    const period = options.halvingPeriod ?? 0;
    if (options.aging === "halving" && !(Number.isInteger(period) && period > 0)) {
      throw new RangeError(`Cannot age by halving every ${options.halvingPeriod} touches: the period must be a positive integer`);
    }
    this.name = options.name;
    this.algorithm = options.algorithm;
    this.#options = options;
    this.#period = period;
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The current inflation value L (dynamic aging), for tests and reports. */
  get inflation(): number {
    return this.#inflation;
  }

  touch(key: string, sizeBytes: number, options: TouchOptions = {}): boolean {
    checkSize(key, sizeBytes);
    const cost = options.cost ?? 1;
    checkCost(key, cost);
    const seq = ++this.#clock;
    let entry = this.#entries.get(key);
    const hit = entry !== undefined;
    if (entry === undefined) {
      entry = { key, sizeBytes, cost, count: 1, priority: 0, seq, pos: -1 };
      entry.priority = this.#priority(entry);
      this.#entries.set(key, entry);
      this.#heap.push(entry);
      this.#bytes += sizeBytes;
    } else {
      this.#bytes += sizeBytes - entry.sizeBytes;
      entry.sizeBytes = sizeBytes;
      entry.cost = cost;
      entry.count += 1;
      entry.seq = seq;
      entry.priority = this.#priority(entry);
      this.#heap.update(entry);
    }
    if (this.#options.aging === "halving" && seq % this.#period === 0) this.#halve();
    return hit;
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  victim(options: VictimOptions = {}): string | undefined {
    const { candidates, incoming } = options;
    if (candidates !== undefined) return lowestCandidate(candidates, incoming, (k) => this.#entries.get(k), ranksBefore);
    const top = this.#heap.peek();
    if (top === undefined || top.key !== incoming) return top?.key;
    // The runner-up of a heap is one of the root's children.
    const left = this.#heap.at(1);
    const right = this.#heap.at(2);
    if (left === undefined) return right?.key;
    if (right === undefined) return left.key;
    return ranksBefore(left, right) ? left.key : right.key;
  }

  evict(key: string): boolean {
    const entry = this.#entries.get(key);
    if (entry === undefined) return false;
    if (this.#options.aging === "dynamic") {
      // The lowest priority in the cache (the victim's when it was the policy's own choice;
      // never more, so a restricted eviction cannot age the others too fast).
      this.#inflation = Math.max(this.#inflation, this.#heap.peek()!.priority);
    }
    return this.remove(key);
  }

  remove(key: string): boolean {
    const entry = this.#entries.get(key);
    if (entry === undefined) return false;
    this.#entries.delete(key);
    this.#heap.delete(entry);
    this.#bytes -= entry.sizeBytes;
    return true;
  }

  keys(): IterableIterator<string> {
    return this.#entries.keys();
  }

  #priority(entry: GdEntry): number {
    const base = this.#options.aging === "dynamic" ? this.#inflation : 0;
    if (this.#options.value === "frequency") return base + entry.count;
    return base + (entry.count * entry.cost) / Math.max(entry.sizeBytes, 1);
  }

  #halve(): void {
    for (const entry of this.#entries.values()) {
      entry.count /= 2;
      entry.priority = this.#priority(entry);
    }
    this.#heap.rebuild();
  }
}
