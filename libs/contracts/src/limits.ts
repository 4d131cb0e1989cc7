/**
 * The api's cluster-wide rate limits (docs/adr/0017-cluster-rate-limits.md): every api instance
 * leases batches of permits from one token bucket per limit scope, kept in a JetStream KV bucket
 * and changed only with revision checks. The bucket's name, its keys and the value of a key are
 * defined here; the api (`services/api/src/shared_limits.ts`) is their only user.
 *
 * @module
 */
import { z } from "zod";

/** The api's rate-limit KV bucket under a prefix (dots are not allowed in bucket names). */
export function rateLimitBucket(prefix: string): string {
  return `${prefix.replaceAll(".", "_")}_api_limits`;
}

/** The limit scopes shared by the api instances. */
export const RateLimitScope = z.enum(["global_requests", "global_tokens"]);
export type RateLimitScope = z.infer<typeof RateLimitScope>;

/** The KV key of a scope's bucket state. */
export function rateLimitKey(scope: RateLimitScope): string {
  return `bucket.${scope}`;
}

/**
 * A cluster token bucket's state: its `level` (permits in it, fractional while it refills) at
 * `at` (ms since the epoch, on the clock of the instance that wrote it). A reader refills it by
 * the elapsed time × the limit's rate, up to one minute's worth; `at` only moves forward.
 */
export const RateLimitState = z.object({
  level: z.number().finite(),
  at: z.number().int().nonnegative(),
});
export type RateLimitState = z.infer<typeof RateLimitState>;
