/**
 * The lease's part of one generate request on a worker, local engine or proxy alike: admission on
 * its slot under its fencing token, and its end, once — kept as a slot credit, else released
 * one-way in the same write as the end frame and ahead of it. Fencing makes a lost or late release
 * harmless (docs/scheduler.md). A generation that fails releases its lease (the stream's
 * `beforeEnd` hook). A request without a lease (the queue-group fallback) has none of this.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import { LeaseReleased } from "@atlas/contracts";
import type { EngineRequest } from "./engine_types.ts";
import type { SlotGuard } from "./heartbeat.ts";

/** What the worker's stream handler is given (the part used here). */
export interface LeaseCall {
  signal: AbortSignal;
  beforeEnd: (fn: () => void) => void;
}

/** The slot credit an answer carries when its lease stays with the api. */
export interface KeptCredit {
  lease_id: string;
  fencing_token: number;
  slot: number;
}

/** One request's lease on this worker ({@link runLease}). */
export interface LeaseRun {
  /** The signal the generation runs under: the lease's (aborted when it is revoked) or the caller's. */
  readonly signal: AbortSignal;
  /** Records how many tokens the slot holds for the session's next turn (sent with the release). */
  keep(tokensInSlot: number): void;
  /**
   * Ends the lease after a successful generation: a slot credit for the api when the lease asked to
   * be kept and `mayKeep` (not while draining), else released. `null` without a lease.
   */
  finish(mayKeep: boolean): KeptCredit | null;
  /** Leaves the slot (in a `finally`). */
  done(): void;
}

/** Admits `req` on its leased slot and arranges the lease's end (see the module doc). */
export function runLease(bus: Bus, guard: SlotGuard, workerId: string, req: EngineRequest, call: LeaseCall): LeaseRun {
  const lease = req.lease;
  const admitted = lease === undefined ? undefined : guard.admit(lease.slot, lease.fencing_token, call.signal);
  let kept = 0;
  let settled = false;
  const settle = (keep: boolean): boolean => {
    if (settled || lease === undefined) return false;
    settled = true;
    const { lease_id, fencing_token, slot } = lease;
    return guard.settle(slot, fencing_token, keep, () =>
      bus.publish(LeaseReleased, {
        lease_id,
        fencing_token,
        worker_id: workerId,
        slot,
        tokens_in_slot: kept,
        session: guard.session(slot),
      }),
    );
  };
  if (lease !== undefined) call.beforeEnd(() => settle(false));
  return {
    signal: admitted?.signal ?? call.signal,
    keep: (tokens) => {
      kept = tokens;
    },
    finish: (mayKeep) =>
      lease !== undefined && settle(lease.keep === true && mayKeep)
        ? { lease_id: lease.lease_id, fencing_token: lease.fencing_token, slot: lease.slot }
        : null,
    done: () => admitted?.done(),
  };
}
