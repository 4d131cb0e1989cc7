/**
 * The scheduler service. Its handlers arrive with their issues; today it joins the bus, answers
 * discovery and health, and drains on shutdown.
 *
 * @module
 */
import type { ServiceContext, ServiceHandle } from "@atlas/service";

/** Starts the scheduler and returns its handle. */
export async function startScheduler(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus } = ctx;
  return {
    health: () => ({ state: bus.nc.isClosed() ? "down" : "ok", checks: { nats: { ok: !bus.nc.isClosed() } } }),
    stop: async () => {},
  };
}
