/**
 * `x-atlas-degraded`: what an answer was served without (ARCHITECTURE §3) — `scheduler` (queue
 * group dispatch, no session affinity), `memory` (no recall; the append is still durable),
 * `metrics` (the metrics service is out; the answer is not in the analytics).
 *
 * @module
 */
import type { FastifyReply } from "fastify";

/** What an answer was served without. */
export type Degradation = "scheduler" | "memory" | "metrics";

/** Adds `what` to the answer's `x-atlas-degraded` header (once; comma-separated). */
export function markDegraded(reply: FastifyReply, what: Degradation): void {
  const prior = reply.getHeader("x-atlas-degraded");
  const list =
    prior === undefined
      ? []
      : String(prior)
          .split(",")
          .map((s) => s.trim());
  if (list.includes(what)) return;
  reply.header("x-atlas-degraded", [...list, what].join(", "));
}
