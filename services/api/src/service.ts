/**
 * The api service: builds the HTTP app over the bus and listens on `HOST:PORT`.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { buildApp } from "./app.ts";

/** Starts the api and returns its handle. */
export async function startApi(ctx: ServiceContext): Promise<ServiceHandle> {
  const app = await buildApp(ctx);
  const address = await app.listen({ host: ctx.config.HOST, port: ctx.config.PORT });
  ctx.log.info({ address }, `ATLAS api listening on ${address}`);
  return {
    health: () => ({ state: "ok", checks: { http: { ok: true, detail: address } }, details: { address } }),
    // Stop accepting, let in-flight requests finish for the grace period, then cut what is left.
    stop: async () => {
      const timer = setTimeout(() => app.server.closeAllConnections(), ctx.config.ATLAS_SHUTDOWN_GRACE_MS);
      await app.close();
      clearTimeout(timer);
    },
  };
}

/** The api service, for `runService` and in-process tests. */
export const apiService: ServiceDefinition = {
  name: ServiceName.api,
  description: "OpenAI-compatible HTTP API",
  start: startApi,
};
