/**
 * `GET /health` (the process is alive), `GET /ready` (it can serve completions: NATS is
 * connected and at least one inference worker is healthy) and `GET /v1/atlas/status`.
 *
 * @module
 */
import { Health, ServiceName } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import { clusterStatus } from "../status.ts";

/** Registers the health routes. */
export async function healthRoutes(app: FastifyInstance): Promise<void> {
  const { bus, config } = app.deps;

  app.get("/health", async () => ({ status: "ok" }));

  app.get("/ready", async (_req, reply) => {
    if (bus.nc.isClosed() || bus.closing) return reply.code(503).send({ ready: false, reason: "NATS connection is closed" });
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
  });

  app.get("/v1/atlas/status", async () => clusterStatus(bus, { atlasEnabled: config.ATLAS_ENABLED }));
}
