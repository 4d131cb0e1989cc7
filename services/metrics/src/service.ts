/**
 * The metrics service. Its handlers arrive with their issues; today it joins the bus, answers
 * discovery and health, and drains on shutdown.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";

/** Starts the metrics and returns its handle. */
export async function startMetrics(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus } = ctx;
  return {
    health: () => ({ state: bus.nc.isClosed() ? "down" : "ok", checks: { nats: { ok: !bus.nc.isClosed() } } }),
    stop: async () => {},
  };
}

/** The metrics service, for `runService` and in-process tests. */
export const metricsService: ServiceDefinition = {
  name: ServiceName.metrics,
  description: "Sliding-window analytics over every service's metric events",
  start: startMetrics,
};
