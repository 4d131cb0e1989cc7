/**
 * The cache vocabulary, defined once: the eviction strategies a request may name
 * (`atlas.cache_strategy`: the scheduler evicts idle slots' sessions (L1) by it, the workers
 * their L2 snapshots and L3 objects; the policies themselves are `@atlas/cache-policy`), and
 * the tiers a prompt's reused tokens can come from.
 *
 * @module
 */
import { z } from "zod";

/** Eviction strategy a request asks for. */
export const CacheStrategy = z.enum(["lru", "lfu", "adaptive"]);
/** Eviction strategy a request asks for. */
export type CacheStrategy = z.infer<typeof CacheStrategy>;
/** The strategy of a request that names none. */
export const DEFAULT_CACHE_STRATEGY: CacheStrategy = "adaptive";

/** Where a prompt's reused tokens came from: the slot itself (L1), a restored snapshot (L2, L3), or nowhere. */
export const CacheTier = z.enum(["l1", "l2", "l3", "miss"]);
/** Where a prompt's reused tokens came from. */
export type CacheTier = z.infer<typeof CacheTier>;
