/**
 * The pool's vocabulary: what it keeps per worker and slot, what it is asked (`AcquireRequest`),
 * what it answers and what it asks its owner to do (`PoolAction`). `pool.ts` re-exports the
 * public part.
 *
 * @module
 */
import type { CacheStrategy, Lease, LeaseAcquire } from "@atlas/contracts";
import type { z } from "zod";

/** A lease as the pool keeps it. */
export interface LeaseRecord extends Lease {}

/** One slot as the pool sees it. */
export interface SlotState {
  readonly worker: string;
  readonly index: number;
  session: string | null;
  tokens: number;
  lease: LeaseRecord | null;
  /** The worker reports the slot busy under a token the pool does not know (after failover). */
  foreignBusy: boolean;
  /** Highest fencing token the worker reported for this slot. */
  reportedToken: number;
  /** Highest fencing token this pool granted on this slot. */
  grantedToken: number;
}

/** One worker as the pool sees it. */
export interface WorkerState {
  readonly id: string;
  model: string;
  fingerprint: string;
  ctxSize: number;
  lastSeen: number;
  alive: boolean;
  draining: boolean;
  slots: SlotState[];
  l2: Map<string, { bytes: number; tokens: number }>;
}

/** What the pool asks its owner to do as a consequence of a change. */
export type PoolAction =
  | { type: "abort"; worker: string; slot: number; fencing_token: number }
  | { type: "revoke"; worker: string; slot: number; fencing_token: number }
  | { type: "lease-removed"; lease_id: string }
  | { type: "worker-dead"; worker: string };

/** Chooses which idle session to evict from a set of candidates, by strategy. */
export type VictimChooser = (candidates: readonly string[], strategy: CacheStrategy) => string | undefined;

/**
 * A request for slots: the contract's (`LeaseAcquire`, also what `SchedulerDispatch` carries)
 * without what the pool does not read, plus `credit`.
 */
export type AcquireRequest = Pick<
  z.infer<typeof LeaseAcquire.request>,
  "request_id" | "holder" | "model" | "session" | "count" | "strategy" | "ttl_ms"
> & {
  /**
   * Grant the lease as a slot credit, kept by the worker for the holder between requests (one
   * slot only, with or without a session; ignored for a batch).
   */
  credit?: boolean;
};

/** Options for {@link Pool}. */
export interface PoolOptions {
  /** A worker is dead after this long without a heartbeat (3 × its interval). */
  heartbeatTimeoutMs?: number;
  /** First fencing token minus one (a new leader passes the reserved block's start). */
  fencingStart?: number;
  /** Picks eviction victims; default least recently used. */
  chooseVictim?: VictimChooser;
  /** Makes lease ids; default random UUIDs. */
  newId?: () => string;
  /**
   * Told when a session used its slot (once per lease, at release, with the tokens it now holds)
   * and when it leaves L1, to feed eviction policies. Only idle sessions are ever victims, so a
   * session in flight need not be known yet.
   */
  observer?: { used(session: string, tokens: number): void; left(session: string): void };
}

/** The outcome of an acquire. */
export type AcquireResult =
  | { ok: true; leases: LeaseRecord[]; evicted: { session: string; worker: string; slot: number }[] }
  | { ok: false; reason: "no_worker" | "busy" };
