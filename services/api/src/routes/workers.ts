/**
 * `POST /v1/atlas/workers/{id}/drain`: the scheduler stops leasing the worker's slots and the
 * worker moves its sessions (resident and L2) to L3, so their next turns resume on other workers.
 * Needs an admin key when keys are configured.
 *
 * @module
 */
import { SchedulerDrain } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { requireAdmin } from "../auth.ts";
import { Tag } from "../openapi.ts";

/** Registers the worker operations. */
export async function workerRoutes(app: FastifyInstance): Promise<void> {
  const schema = {
    tags: [Tag.cluster],
    summary: "Drain a worker: no new leases, its sessions move to L3 (admin)",
    params: z.object({ id: z.string() }),
  };
  app.withTypeProvider<ZodTypeProvider>().post("/v1/atlas/workers/:id/drain", { schema }, async (req, reply) => {
    requireAdmin(req);
    const r = await app.deps.bus.call(SchedulerDrain, { worker_id: req.params.id }, { timeoutMs: 5000, requestId: req.id });
    return reply.code(202).send(r);
  });
}
