/**
 * The persistence service. Session memory arrives with its issue; today it joins the bus,
 * checks that JetStream is enabled on the server it depends on, and answers health.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { jetstreamManager } from "@nats-io/jetstream";

/** Starts persistence and returns its handle. */
export async function startPersistence(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus, log } = ctx;
  const jsm = await jetstreamManager(bus.nc, { timeout: 5000 });
  let jetstream = { ok: false, detail: "not checked yet" };
  const check = async () => {
    try {
      const info = await jsm.getAccountInfo();
      jetstream = { ok: true, detail: `streams ${info.streams}, storage ${info.storage} B` };
    } catch (err) {
      jetstream = { ok: false, detail: err instanceof Error ? err.message : String(err) };
      log.warn({ err }, "JetStream is not available");
    }
  };
  await check();
  const timer = setInterval(() => void check(), 5000);
  return {
    health: () => ({ state: jetstream.ok ? "ok" : "down", checks: { jetstream } }),
    stop: async () => clearInterval(timer),
  };
}

/** The persistence service, for `runService` and in-process tests. */
export const persistenceService: ServiceDefinition = {
  name: ServiceName.persistence,
  description: "Session memory, KV-state objects and backups",
  start: startPersistence,
};
