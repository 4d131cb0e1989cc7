/**
 * The ensemble variant of `adaptive`: several expert policies each run a *shadow* cache of the
 * same byte budget (keys and sizes only, no data) over the same requests; the real cache takes
 * its victims from the expert whose shadow scored the most hits over a recent window
 * (exponentially decayed, window `window` requests). Every expert also indexes the real
 * resident entries, so the leader can rank them.
 *
 * @module
 */
import { type CachePolicy, checkSize, PolicyName, type TouchOptions, type VictimOptions } from "./policy.ts";

/** Options of {@link createEnsemblePolicy}. */
export interface EnsembleOptions {
  /** Creates the experts (each call a fresh instance); at least one. */
  readonly experts: readonly (() => CachePolicy)[];
  /** The tier's byte budget, for the shadows. Default: the most bytes ever resident (learned). */
  readonly budgetBytes?: number;
  /** Requests over which shadow hits are averaged (decay 1 − 1/window). Default 2,000. */
  readonly window?: number;
}

interface Expert {
  /** Ranks the real resident entries. */
  readonly real: CachePolicy;
  /** Runs its own cache of the same budget, to be scored. */
  readonly shadow: CachePolicy;
  score: number;
}

/** The ensemble policy. */
export class EnsemblePolicy implements CachePolicy {
  readonly name = PolicyName.adaptive;
  readonly algorithm: string;
  readonly #experts: Expert[];
  readonly #budget: number | undefined;
  readonly #decay: number;
  readonly #sizes = new Map<string, number>();
  #bytes = 0;
  #peak = 0;
  #leader: Expert;

  constructor(options: EnsembleOptions) {
    if (options.experts.length === 0) throw new RangeError("Cannot build an ensemble of no experts");
    const window = options.window ?? 2_000;
    if (!(window >= 1)) throw new RangeError(`Cannot compare experts over a window of ${window} requests: it must be ≥ 1`);
    this.#experts = options.experts.map((make) => ({ real: make(), shadow: make(), score: 0 }));
    this.#leader = this.#experts[0]!;
    if (options.budgetBytes !== undefined && !(options.budgetBytes > 0)) {
      throw new RangeError(`Cannot use a budget of ${options.budgetBytes} bytes: it must be > 0`);
    }
    this.#budget = options.budgetBytes;
    this.#decay = 1 - 1 / window;
    this.algorithm = `ensemble(${this.#experts.map((e) => e.real.algorithm).join(",")})`;
  }

  get size(): number {
    return this.#sizes.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The algorithm currently followed. */
  get leader(): string {
    return this.#leader.real.algorithm;
  }

  touch(key: string, sizeBytes: number, options?: TouchOptions): boolean {
    checkSize(key, sizeBytes);
    const before = this.#sizes.get(key);
    this.#sizes.set(key, sizeBytes);
    this.#bytes += sizeBytes - (before ?? 0);
    this.#peak = Math.max(this.#peak, this.#bytes);
    const budget = this.#budget ?? this.#peak;
    let leader = this.#leader;
    for (const expert of this.#experts) {
      expert.real.touch(key, sizeBytes, options);
      expert.score *= this.#decay;
      if (sizeBytes > budget) {
        expert.shadow.remove(key);
        continue;
      }
      if (expert.shadow.touch(key, sizeBytes, options)) expert.score += 1;
      while (expert.shadow.bytes > budget) {
        const victim = expert.shadow.victim({ incoming: key });
        if (victim === undefined) break;
        expert.shadow.evict(victim);
      }
      if (expert.score > leader.score) leader = expert;
    }
    this.#leader = leader;
    return before !== undefined;
  }

  has(key: string): boolean {
    return this.#sizes.has(key);
  }

  victim(options?: VictimOptions): string | undefined {
    return this.#leader.real.victim(options);
  }

  evict(key: string): boolean {
    if (!this.#forget(key)) return false;
    for (const expert of this.#experts) expert.real.evict(key);
    return true;
  }

  remove(key: string): boolean {
    for (const expert of this.#experts) expert.shadow.remove(key);
    if (!this.#forget(key)) return false;
    for (const expert of this.#experts) expert.real.remove(key);
    return true;
  }

  keys(): IterableIterator<string> {
    return this.#sizes.keys();
  }

  #forget(key: string): boolean {
    const size = this.#sizes.get(key);
    if (size === undefined) return false;
    this.#sizes.delete(key);
    this.#bytes -= size;
    return true;
  }
}

/** Creates an ensemble policy that follows whichever expert has been hitting most. */
export function createEnsemblePolicy(options: EnsembleOptions): CachePolicy {
  return new EnsemblePolicy(options);
}
