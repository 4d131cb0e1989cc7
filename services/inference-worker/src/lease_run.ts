/**
 * The lease's part of one generate request on a worker, local engine or proxy alike: admission on
 * its slot under its fencing token, and its end, once — kept as a slot credit, else released
 * one-way in the same write as the end frame and ahead of it. Fencing makes a lost or late release
 * harmless (docs/scheduler.md). A generation that fails releases its lease (the stream's
 * `beforeEnd` hook). A request without a lease (the queue-group fallback) has none of this.
 * {@link serveWorker} wires a worker's subjects to its handler and its slot guard.
 *
 * @module
 */
import { type Bus, BusError, type StreamContext } from "@atlas/bus";
import {
  ANY_WORKER,
  type GenerateChunk,
  type GenerateEnd,
  LeaseReleased,
  ServiceName,
  WorkerControl,
  WorkerGenerate,
} from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import type { z } from "zod";
import type { EngineRequest } from "./engine_types.ts";
import type { SlotGuard } from "./heartbeat.ts";

/** What the worker's stream handler is given (the part used here). */
export interface LeaseCall {
  signal: AbortSignal;
  beforeEnd: (fn: () => void) => void;
  abort: (reason: unknown) => void;
}

/** The slot credit an answer carries when its lease stays with the api. */
export interface KeptCredit {
  lease_id: string;
  fencing_token: number;
  slot: number;
}

/** One request's lease on this worker ({@link runLease}). */
export interface LeaseRun {
  /** The signal the generation runs under: the call's, also aborted when a newer lease takes the slot over. */
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
  const admitted = lease === undefined ? undefined : guard.admit(lease.slot, lease.fencing_token, call.abort);
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
    signal: call.signal,
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

/** Refuses a request for another model than the one `workerId` serves (`not_found`). */
export function checkModel(req: EngineRequest, model: string, workerId: string): void {
  if (req.model !== model)
    throw new BusError("not_found", `Model "${req.model}" is not served by worker "${workerId}"`, { param: "model" });
}

/** A worker's generate handler (local engine or proxy). */
export type GenerateHandler = (req: EngineRequest, c: StreamContext<z.input<typeof GenerateChunk>>) => Promise<z.input<typeof GenerateEnd>>;

/**
 * Serves a worker's subjects, local engine or proxy alike: `generate` on its own subject and in
 * the workers' queue group (the fallback when the scheduler is out), and its control subject —
 * `abort` and `revoke` of a stale lease on its slot go to the guard, `drain` to `onDrain` (once).
 */
export function serveWorker(
  bus: Bus,
  options: { workerId: string; guard: SlotGuard; log: Logger; handler: GenerateHandler; draining: () => boolean; onDrain: () => void },
): void {
  const { workerId, guard, log, handler } = options;
  bus.serveStream(WorkerGenerate, handler, { params: { workerId }, queue: false });
  bus.serveStream(WorkerGenerate, handler, { params: { workerId: ANY_WORKER }, queue: ServiceName.worker });
  bus.subscribe(
    WorkerControl,
    (cmd) => {
      if (cmd.type === "abort" && guard.abort(cmd.slot, cmd.fencing_token)) log.warn(cmd, "Aborted a generation whose lease expired");
      if (cmd.type === "revoke") guard.revoke(cmd.slot, cmd.fencing_token);
      if (cmd.type === "drain" && !options.draining()) options.onDrain();
    },
    { params: { workerId } },
  );
}
