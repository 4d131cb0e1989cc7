/**
 * Says once, in the supervisor's log, when the stack can answer a completion: an api's `/ready`
 * answers 200 (NATS connected, an inference worker healthy) and its `/v1/models` lists a model.
 * Before that a chat gets a 503 `no_workers` with `Retry-After` (the model loads, the worker's
 * first heartbeat comes). The api is found over the bus — its health details carry the address it
 * listens on — so this works with `PORT=0` and with workers the supervisor did not start.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Bus } from "@atlas/bus";
import { Health, ServiceName } from "@atlas/contracts";
import type { Logger } from "@atlas/log";

/** How often the stack is looked at until it is ready. */
const CHECK_EVERY_MS = 1000;

/** Whether the api at `address` serves completions now: the models it lists (empty: not yet), or null when its list needs a key. */
async function servedModels(address: string, signal: AbortSignal): Promise<string[] | null> {
  const ready = await fetch(`${address}/ready`, { signal });
  await ready.body?.cancel();
  if (ready.status !== 200) return [];
  const models = await fetch(`${address}/v1/models`, { signal });
  if (models.status === 401) {
    await models.body?.cancel();
    return null; // ATLAS_API_KEYS is set: /ready is all an anonymous caller learns
  }
  const body = (await models.json().catch(() => ({}))) as { data?: { id?: unknown }[] };
  return (body.data ?? []).map((m) => String(m.id));
}

/** Logs `Ready: <address> serves <models>` once the stack can answer; ends then, or when `signal` aborts. */
export async function announceReady(options: { bus: () => Bus | undefined; log: Logger; signal: AbortSignal }): Promise<void> {
  const { log, signal } = options;
  while (!signal.aborted) {
    await sleep(CHECK_EVERY_MS, undefined, { ref: false });
    const bus = options.bus();
    if (bus === undefined || signal.aborted) continue;
    try {
      for (const api of await bus.discover({ service: ServiceName.api, timeoutMs: 250 })) {
        const health = await bus.call(Health, {}, { params: { service: api.name, instance: api.id }, timeoutMs: 1000 });
        const address = health.details?.address;
        if (typeof address !== "string") continue;
        const models = await servedModels(address, signal);
        if (models !== null && models.length === 0) continue;
        const serves = models === null ? "(its model list needs an API key)" : `serves ${models.join(", ")}`;
        log.info({ address, models }, `Ready: ${address} ${serves}`);
        return;
      }
    } catch {
      // Not up yet (no answer, refused connection): look again at the next check.
    }
  }
}
