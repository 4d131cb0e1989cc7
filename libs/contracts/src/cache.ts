/**
 * The eviction strategies a request may name (`atlas.cache_strategy`), defined once: the
 * scheduler evicts idle slots' sessions (L1) by it, the workers their L2 snapshots and L3
 * objects. The policies themselves are `@atlas/cache-policy`.
 *
 * @module
 */
import { z } from "zod";

/** Eviction strategy a request asks for. */
export const CacheStrategy = z.enum(["lru", "lfu", "adaptive"]);
/** Eviction strategy a request asks for. */
export type CacheStrategy = z.infer<typeof CacheStrategy>;
