/**
 * `POST /v1/atlas/workers/{id}/drain`: the scheduler stops leasing the worker's slots and the
 * worker moves its sessions (resident and L2) to L3, so their next turns resume on other workers.
 * Needs an admin key when keys are configured.
 *
 * @module
 */
import { SchedulerDrain } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import { requireAdmin } from "../auth.ts";

/** Registers the worker operations. */
export async function workerRoutes(app: FastifyInstance): Promise<void> {
  app.post<{ Params: { id: string } }>("/v1/atlas/workers/:id/drain", async (req, reply) => {
    requireAdmin(req);
    const r = await app.deps.bus.call(SchedulerDrain, { worker_id: req.params.id }, { timeoutMs: 5000, requestId: req.id });
    return reply.code(202).send(r);
  });
}
