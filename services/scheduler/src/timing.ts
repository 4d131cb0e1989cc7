/**
 * The scheduler's timing, in one place (`service.ts` runs by it, `leader_claim.ts` takes `claim`).
 *
 * @module
 */

/** Timing of the scheduler, in ms. */
export const SchedulerTiming = {
  /** The leader claim (`leader_claim.ts`), in ms. */
  claim: {
    /** Renewal period. */
    renewMs: 500,
    /** How long one renewal waits for KV (not JetStream's 5 s: the first one after a stream election comes within a second). */
    renewTimeoutMs: 1000,
    /** A standby takes a claim over when its revision has not moved for this long (every read of it answered). */
    staleMs: 2000,
    /** A leader that cannot reach KV (a stream election) leads on for this long after its last renewal. */
    graceMs: 15_000,
  },
  /** The leader bucket's TTL: an unrenewed claim is gone from KV after this (a backstop). */
  claimExpiryMs: 20_000,
  /** How often standbys try to claim, and the leader expires leases. */
  tickMs: 250,
  /** Workers' heartbeat period; three missed ones mark a worker dead. */
  heartbeatMs: 1000,
} as const;
