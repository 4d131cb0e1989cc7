/**
 * `adaptive`, the default strategy, and the variants it was chosen from (measured in
 * `docs/cache-policies.md`):
 *
 * - `ensemble` (the default): four experts each run a shadow cache of the tier's budget; the
 *   real cache evicts as the expert with the most recent shadow hits would. The experts:
 *   `arc-gdsf`, `arc-gds`, `lfu` with halving, and plain `lru` (which leads on conversation
 *   traces, where recency is the best online sign of a conversation that goes on). It matched or beat both `lru` and `lfu` on
 *   every trace of the default workload and had the best mean and the fewest, smallest
 *   shortfalls over a 204-case sweep (`arc-gdsf` alone falls behind on shifting popularity).
 * - `arc-gdsf`: size-aware ARC. T1 (used once) ordered by GreedyDual-Size, T2 (used again)
 *   by GreedyDual-Size-Frequency; ghost hits adapt the T1 target as in ARC.
 * - `arc-gds`: size-aware ARC with GreedyDual-Size in both lists (recency, no counts).
 * - `arc`: classic ARC (LRU lists), byte-sized.
 * - `gdsf`: GreedyDual-Size-Frequency with dynamic aging.
 *
 * With `cost` hints in tokens, GDS/GDSF rank by uses × tokens ÷ bytes, which is the same for
 * every session of one model: they then stop favouring small sessions and rank by recency or
 * frequency alone. With no hint (cost 1) they favour small sessions, which maximises the hit
 * ratio.
 *
 * @module
 */
import { createArcPolicy } from "./arc.ts";
import { createEnsemblePolicy } from "./ensemble.ts";
import { GreedyDualPolicy } from "./greedy_dual.ts";
import { createLfuPolicy } from "./lfu.ts";
import { createLruPolicy } from "./lru.ts";
import { type CachePolicy, PolicyName } from "./policy.ts";

/** The algorithms behind `adaptive`. */
export const AdaptiveVariant = {
  ensemble: "ensemble",
  arcGdsf: "arc-gdsf",
  arcGds: "arc-gds",
  arc: "arc",
  gdsf: "gdsf",
} as const;

/** An algorithm behind `adaptive`. */
export type AdaptiveVariant = (typeof AdaptiveVariant)[keyof typeof AdaptiveVariant];

/** Options of {@link createAdaptivePolicy}. */
export interface AdaptiveOptions {
  /** Default `ensemble`. */
  readonly variant?: AdaptiveVariant;
  /**
   * The tier's byte budget: ARC sizes its ghost lists by it, the ensemble its shadow caches.
   * Default: learned as the most bytes ever resident (give it when known).
   */
  readonly budgetBytes?: number;
  /** Ensemble only: requests over which the experts' shadow hits are compared. Default 2,000. */
  readonly window?: number;
}

/** Creates the `adaptive` policy (by default the ensemble). */
export function createAdaptivePolicy(options: AdaptiveOptions = {}): CachePolicy {
  const budget = options.budgetBytes === undefined ? {} : { budgetBytes: options.budgetBytes };
  switch (options.variant ?? AdaptiveVariant.ensemble) {
    case AdaptiveVariant.ensemble:
      return createEnsemblePolicy({
        ...budget,
        ...(options.window === undefined ? {} : { window: options.window }),
        experts: [
          () => createArcPolicy({ ...budget, recency: "gds", frequency: "gdsf" }),
          () => createArcPolicy({ ...budget, recency: "gds", frequency: "gds" }),
          () => createLfuPolicy({ aging: "halving" }),
          () => createLruPolicy(),
        ],
      });
    case AdaptiveVariant.arcGdsf:
      return createArcPolicy({ ...budget, recency: "gds", frequency: "gdsf" });
    case AdaptiveVariant.arcGds:
      return createArcPolicy({ ...budget, recency: "gds", frequency: "gds" });
    case AdaptiveVariant.arc:
      return createArcPolicy(budget);
    case AdaptiveVariant.gdsf:
      return new GreedyDualPolicy({
        name: PolicyName.adaptive,
        algorithm: "gdsf",
        value: "frequency-per-byte",
        aging: "dynamic",
      });
  }
}
