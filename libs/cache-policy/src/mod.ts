/**
 * Cache eviction policies for the scheduler's KV tiers: `lru`, `lfu` (with aging) and
 * `adaptive` (the default), a byte-budgeted cache simulator, and the traces they are compared
 * on. Pure and dependency-free: no I/O, no wall clock.
 *
 * ```ts
 * const l2 = createPolicy("adaptive", { budgetBytes: DefaultBudgets.l2 });
 * l2.touch("s-42", tokens * bytesPerToken);              // a session's state cached or used
 * const victim = l2.victim({ candidates: idleSessions }); // who leaves if room is needed
 * if (victim !== undefined) l2.evict(victim);
 * ```
 *
 * @module
 */
import { type AdaptiveOptions, createAdaptivePolicy } from "./adaptive.ts";
import { createLfuPolicy, type LfuOptions } from "./lfu.ts";
import { createLruPolicy } from "./lru.ts";
import { type CachePolicy, PolicyName } from "./policy.ts";

export { type AdaptiveOptions, AdaptiveVariant, createAdaptivePolicy } from "./adaptive.ts";
export { type ArcListOrder, type ArcOptions, createArcPolicy } from "./arc.ts";
export { simulateBelady } from "./belady.ts";
export {
  type BenchmarkOptions,
  type BenchmarkRow,
  benchmarkTable,
  type PolicyFactory,
  runBenchmark,
  type TableOptions,
} from "./benchmark.ts";
export { type SimulateOptions, type SimulationResult, simulate } from "./cache.ts";
export { type ConversationOptions, conversationTrace } from "./conversations.ts";
export { createEnsemblePolicy, type EnsembleOptions } from "./ensemble.ts";
export { createLfuPolicy, type LfuAging, type LfuOptions } from "./lfu.ts";
export { createLruPolicy } from "./lru.ts";
export { type CachePolicy, PolicyName, type TouchOptions, type VictimOptions } from "./policy.ts";
export {
  BenchmarkModelWorkload,
  BytesPerToken,
  createRandom,
  createZipf,
  DefaultBudgets,
  DefaultWorkload,
  type LoopOptions,
  loopTrace,
  type ScanOptions,
  type ShiftingOptions,
  scanTrace,
  shiftingTrace,
  standardTraces,
  type Trace,
  type TraceRequest,
  type WorkloadOptions,
  zipfTrace,
} from "./traces.ts";

/** Options of {@link createPolicy}: each policy reads the ones that concern it. */
export interface PolicyOptions extends LfuOptions, AdaptiveOptions {}

/** The strategy a request gets when it names none. */
export const DefaultPolicy: PolicyName = PolicyName.adaptive;

/** Creates the policy for a strategy name (as in a request's `atlas.cache_strategy`). */
export function createPolicy(name: PolicyName, options: PolicyOptions = {}): CachePolicy {
  switch (name) {
    case PolicyName.lru:
      return createLruPolicy();
    case PolicyName.lfu:
      return createLfuPolicy(options);
    case PolicyName.adaptive:
      return createAdaptivePolicy(options);
    default:
      throw new RangeError(`Unknown cache policy "${String(name)}": expected lru, lfu or adaptive`);
  }
}
