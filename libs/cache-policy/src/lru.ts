/**
 * `lru`: evict the entry used least recently. A `Map` keeps the entries in recency order
 * (oldest first), so touch, evict and an unrestricted victim are O(1); a victim among
 * candidates is O(candidates).
 *
 * @module
 */
import { type CachePolicy, checkSize, lowestCandidate, PolicyName, type VictimOptions } from "./policy.ts";

interface LruEntry {
  sizeBytes: number;
  /** Logical time of the last touch. */
  seq: number;
}

function olderThan(a: LruEntry, b: LruEntry): boolean {
  return a.seq < b.seq;
}

class LruPolicy implements CachePolicy {
  readonly name = PolicyName.lru;
  readonly algorithm = "lru";
  /** Oldest first: a touch deletes and re-inserts the key. */
  readonly #entries = new Map<string, LruEntry>();
  #bytes = 0;
  #clock = 0;

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  touch(key: string, sizeBytes: number): boolean {
    checkSize(key, sizeBytes);
    const entry = this.#entries.get(key);
    const seq = ++this.#clock;
    if (entry !== undefined) {
      this.#entries.delete(key);
      this.#bytes += sizeBytes - entry.sizeBytes;
      entry.sizeBytes = sizeBytes;
      entry.seq = seq;
      this.#entries.set(key, entry);
      return true;
    }
    this.#entries.set(key, { sizeBytes, seq });
    this.#bytes += sizeBytes;
    return false;
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  victim(options: VictimOptions = {}): string | undefined {
    const { candidates, incoming } = options;
    if (candidates !== undefined) return lowestCandidate(candidates, incoming, (k) => this.#entries.get(k), olderThan);
    for (const key of this.#entries.keys()) if (key !== incoming) return key;
    return undefined;
  }

  evict(key: string): boolean {
    return this.remove(key);
  }

  remove(key: string): boolean {
    const entry = this.#entries.get(key);
    if (entry === undefined) return false;
    this.#entries.delete(key);
    this.#bytes -= entry.sizeBytes;
    return true;
  }

  keys(): IterableIterator<string> {
    return this.#entries.keys();
  }
}

/** Creates a least-recently-used policy. */
export function createLruPolicy(): CachePolicy {
  return new LruPolicy();
}
