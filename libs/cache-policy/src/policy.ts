/**
 * The contract every eviction policy keeps, and the small helpers they share.
 *
 * A policy is the *index* of one cache tier: it knows which keys (sessions) are resident, how
 * many bytes each holds, and how to rank them for eviction. It never evicts by itself: the
 * caller asks for a {@link CachePolicy.victim} (optionally among a subset of keys, for example
 * only the idle slots), acts on it, and then tells the policy with {@link CachePolicy.evict}.
 *
 * Time is logical: a policy orders events by the sequence of calls made to it, never by a
 * wall clock, so the same calls always give the same victims.
 *
 * @module
 */

/** The names of the eviction strategies a request may ask for. */
export const PolicyName = {
  lru: "lru",
  lfu: "lfu",
  adaptive: "adaptive",
} as const;

/** The name of an eviction strategy: `lru`, `lfu` or `adaptive`. */
export type PolicyName = (typeof PolicyName)[keyof typeof PolicyName];

/** Options of {@link CachePolicy.touch}. */
export interface TouchOptions {
  /**
   * What a miss on this entry would cost, in any unit the caller keeps the same for all entries
   * (for a KV state: the tokens to recompute). Cost-aware policies weigh it against the size;
   * the others ignore it. Default 1: every miss costs the same, so a cost-aware policy
   * maximises the hit ratio.
   */
  readonly cost?: number;
}

/** Options of {@link CachePolicy.victim}. */
export interface VictimOptions {
  /**
   * The only keys that may be chosen (for example the sessions held by idle slots). Keys that
   * are not resident are ignored. Default: every resident key.
   */
  readonly candidates?: Iterable<string>;
  /** The key being admitted, for which room is being made: it is never chosen. */
  readonly incoming?: string;
}

/** An eviction policy: the ranked index of the entries resident in one byte-budgeted tier. */
export interface CachePolicy {
  /** The strategy this policy implements. */
  readonly name: PolicyName;
  /** A short description of the algorithm (and variant) behind the name, for reports. */
  readonly algorithm: string;
  /** How many entries are resident. */
  readonly size: number;
  /** The sum of the resident entries' sizes, in bytes. */
  readonly bytes: number;
  /**
   * Records a use of `key`: a hit if it is resident, otherwise an insertion. `sizeBytes` is
   * the entry's current size (a session grows as it talks). Returns whether it was resident.
   */
  touch(key: string, sizeBytes: number, options?: TouchOptions): boolean;
  /** Whether `key` is resident. */
  has(key: string): boolean;
  /**
   * The entry this policy would evict next, among `options.candidates` when given, never
   * `options.incoming`; `undefined` when no resident entry qualifies. Does not change state.
   */
  victim(options?: VictimOptions): string | undefined;
  /**
   * Records that `key` was evicted to make room (usually the key {@link victim} chose). A
   * policy with history may remember it, so a quick return counts as evidence. Returns
   * whether it was resident.
   */
  evict(key: string): boolean;
  /**
   * Forgets `key` entirely, leaving no history (the session was deleted, or moved to another
   * tier for a reason other than eviction). Returns whether it was resident.
   */
  remove(key: string): boolean;
  /** The resident keys, in no particular order. */
  keys(): IterableIterator<string>;
}

/**
 * The candidate that ranks lowest under `less` (the best victim), skipping keys that are not
 * resident and `incoming`. A policy uses it for restricted victim searches: O(candidates).
 */
export function lowestCandidate<E>(
  candidates: Iterable<string>,
  incoming: string | undefined,
  lookup: (key: string) => E | undefined,
  less: (a: E, b: E) => boolean,
): string | undefined {
  let best: string | undefined;
  let bestEntry: E | undefined;
  for (const key of candidates) {
    if (key === incoming) continue;
    const entry = lookup(key);
    if (entry === undefined) continue;
    if (bestEntry === undefined || less(entry, bestEntry)) {
      best = key;
      bestEntry = entry;
    }
  }
  return best;
}

/** Throws unless `sizeBytes` is a finite number ≥ 0. */
export function checkSize(key: string, sizeBytes: number): void {
  if (!Number.isFinite(sizeBytes) || sizeBytes < 0) {
    throw new RangeError(`Cannot cache "${key}": size ${sizeBytes} is not a finite number of bytes ≥ 0`);
  }
}

/** Throws unless `cost` is a finite number > 0. */
export function checkCost(key: string, cost: number): void {
  if (!Number.isFinite(cost) || cost <= 0) {
    throw new RangeError(`Cannot cache "${key}": cost ${cost} is not a finite number > 0`);
  }
}
