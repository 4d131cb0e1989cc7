/**
 * The scheduler service. Its handlers arrive with their issues; today it joins the bus, answers
 * discovery and health, and drains on shutdown.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";

/** Starts the scheduler and returns its handle. */
export async function startScheduler(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus } = ctx;
  return {
    health: () => ({ state: bus.nc.isClosed() ? "down" : "ok", checks: { nats: { ok: !bus.nc.isClosed() } } }),
    stop: async () => {},
  };
}

/** The scheduler service, for `runService` and in-process tests. */
export const schedulerService: ServiceDefinition = {
  name: ServiceName.scheduler,
  description: "Context pool: worker registry, leases, session affinity",
  start: startScheduler,
};
