/**
 * Lease cost (`bench/child/lease.ts`), parent side.
 *
 * @module
 */
import { runChild } from "./load.ts";
import type { Summary } from "./stats.ts";

/** What to measure against a running stack. */
export interface LeaseSpec {
  natsUrl: string;
  prefix: string;
  model: string;
  iterations: number;
  warmup: number;
  /** Acquire with a session (affinity lookup) instead of none. */
  withSession: boolean;
}

/** Timings in ms, client side. */
export interface LeaseResult {
  iterations: number;
  acquireMs: Summary;
  releaseMs: Summary;
  /** acquire + release back to back. */
  pairMs: Summary;
  /** A bare NATS request/reply to an echo responder: the transport's floor. */
  natsEchoMs: Summary;
  residency: Record<string, number>;
}

/** Runs the lease client in its own process. */
export function runLease(spec: LeaseSpec): Promise<LeaseResult> {
  return runChild<LeaseResult>("lease", { type: "run", spec });
}
