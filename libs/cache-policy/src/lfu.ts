/**
 * `lfu`: evict the entry used least often while resident (ties: least recently used first),
 * with aging so that an entry that was hot once and is no longer used eventually leaves.
 *
 * Default aging is `halving`: every `halvingPeriod` touches (default 1,000) every count is
 * halved, so a count measures recent use, with weight halving every period (the
 * periodic-reset idea of TinyLFU). The alternative `dynamic` is LFU-DA (Arlitt et al. 2000):
 * an entry's priority is its use count plus an inflation value L taken when it was last used,
 * and each eviction raises L to the lowest priority in the cache, so entries that stop being
 * used fall behind newcomers. Halving measured better on our traces (docs/cache-policies.md).
 *
 * @module
 */
import { GreedyDualPolicy } from "./greedy_dual.ts";
import { type CachePolicy, PolicyName } from "./policy.ts";

/** How {@link createLfuPolicy} ages its counts. */
export type LfuAging = "halving" | "dynamic";

/** Options of {@link createLfuPolicy}. */
export interface LfuOptions {
  /** `halving` (default: counts halved every `halvingPeriod` touches) or `dynamic` (LFU-DA). */
  readonly aging?: LfuAging;
  /** Touches between two halvings when `aging` is `halving`. Default 1,000. */
  readonly halvingPeriod?: number;
}

/** Creates a least-frequently-used policy with aging. */
export function createLfuPolicy(options: LfuOptions = {}): CachePolicy {
  const aging = options.aging ?? "halving";
  return new GreedyDualPolicy({
    name: PolicyName.lfu,
    algorithm: aging === "dynamic" ? "lfu-da" : "lfu-halving",
    value: "frequency",
    aging,
    halvingPeriod: options.halvingPeriod ?? 1_000,
  });
}
