/**
 * `GET /health` (the process is alive), `GET /ready` (it can serve completions: NATS is
 * connected and at least one inference worker is healthy) and `GET /v1/atlas/status` (the
 * overall state for any key; instances, the pool, breakers and limits for admin keys).
 *
 * @module
 */
import { Health, ServiceName } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import { Tag } from "../openapi.ts";
import { clusterStatus } from "../status.ts";

/** Registers the health routes. */
export async function healthRoutes(app: FastifyInstance): Promise<void> {
  const { bus, config } = app.deps;

  app.get("/health", { schema: { tags: [Tag.probes], summary: "Liveness: the api process answers", security: [] } }, async () => ({
    status: "ok",
  }));

  app.get(
    "/ready",
    { schema: { tags: [Tag.probes], summary: "Readiness: NATS connected and a worker ready", security: [] } },
    async (_req, reply) => {
      if (!bus.connected) return reply.code(503).send({ ready: false, reason: "NATS connection is closed" });
      const workers = await bus.discover({ service: ServiceName.worker, timeoutMs: 100 });
      const states = await Promise.all(
        workers.map((w) =>
          bus
            .call(Health, {}, { params: { service: w.name, instance: w.id }, timeoutMs: 500 })
            .then((r) => r.state)
            .catch(() => "down" as const),
        ),
      );
      const ready = states.filter((s) => s !== "down").length;
      if (ready === 0) return reply.code(503).send({ ready: false, reason: "No inference worker is ready", workers: workers.length });
      return { ready: true, workers: ready };
    },
  );

  // Anyone with a key learns ok | degraded | down; the details (instances, workers, leases,
  // breakers, limits) are the cluster's, for admin keys only.
  app.get("/v1/atlas/status", { schema: { tags: [Tag.cluster], summary: "Cluster status (details for admin keys)" } }, async (req) => {
    const status = await clusterStatus(bus, { atlasEnabled: config.ATLAS_ENABLED });
    if (!req.admin) return { status: status.status, version: status.version, checked_at: status.checked_at };
    const { guard } = app;
    return {
      ...status,
      api: {
        instance: bus.instance,
        breakers: guard.breakers.snapshot(),
        /** Slot credits this api holds, and sessionless requests waiting at it for one (`credits.ts`). */
        slot_credits: app.credits.snapshot(),
        admission: {
          max_concurrent: guard.admission.options.max,
          running: guard.admission.running,
          queued: guard.admission.queued,
          queue_limit: guard.admission.options.queue,
          refused: guard.admission.refused,
        },
        rate_limits: {
          rpm: guard.limiter.limits.rpm,
          tpm: guard.limiter.limits.tpm,
          session_rpm: guard.limiter.limits.sessionRpm,
          session_tpm: guard.limiter.limits.sessionTpm,
          sessions_tracked: guard.limiter.sessions,
          refused: guard.refused.rate_limit,
        },
      },
    };
  });
}
