/**
 * The inference worker with the proxy backend (`ATLAS_WORKER_BACKEND=openai`): the same worker
 * on the bus — `worker.<id>.generate` and the queue group, fenced leases and slot credits
 * (`heartbeat.ts` `SlotGuard`), heartbeats, discovery metadata, metric events (`metrics.ts`) —
 * whose slots are an OpenAI-compatible upstream's parallel requests (`proxy_engine.ts`).
 *
 * The worker registers (serves, heartbeats, advertises) once discovery has reached the upstream
 * (`proxy_upstream.ts`), retrying every second until then. Its health follows the upstream's
 * reachability (probed every second, and failed requests): while the upstream is down the
 * worker is `down`, gives its slot credits back and sends no heartbeat, so the scheduler
 * declares it dead after three missed beats and leases none of its slots; the first good probe
 * brings it back. No KV tiers: nothing is snapshotted, restored or saved at shutdown.
 *
 * @module
 */
import { setTimeout as sleep } from "node:timers/promises";
import { BusError, type HealthStatus } from "@atlas/bus";
import { workerMetadata } from "@atlas/contracts";
import type { ServiceContext, ServiceHandle } from "@atlas/service";
import { SlotGuard, startHeartbeat } from "./heartbeat.ts";
import { checkModel, type GenerateHandler, runLease, serveWorker } from "./lease_run.ts";
import { startWorkerMetrics, type WorkerMetrics } from "./metrics.ts";
import { ProxyEngine } from "./proxy_engine.ts";
import { type Discovered, discoverUpstream, shownUrl, type UpstreamConfig, UpstreamHealth } from "./proxy_upstream.ts";

/** Milliseconds between upstream probes, and between discovery attempts until one succeeds. */
export const UPSTREAM_PROBE_MS = 1000;

/** Options the local worker's service passes on (values it owns). */
export interface ProxyWorkerOptions {
  /** Heartbeat period (service.ts `HEARTBEAT_MS`). */
  heartbeatMs: number;
}

/** Starts the proxy worker; throws only for a missing `ATLAS_UPSTREAM_URL`. */
export async function startProxyWorker(ctx: ServiceContext, options: ProxyWorkerOptions): Promise<ServiceHandle> {
  const { bus, config, log } = ctx;
  const workerId = bus.instance;
  const url = config.ATLAS_UPSTREAM_URL;
  if (url === undefined)
    throw new Error("ATLAS_WORKER_BACKEND=openai needs ATLAS_UPSTREAM_URL (the upstream's OpenAI base URL, /v1 included)");
  const upstreamConfig: UpstreamConfig = {
    url,
    apiKey: config.ATLAS_UPSTREAM_API_KEY,
    model: config.ATLAS_UPSTREAM_MODEL,
    slots: config.ATLAS_UPSTREAM_SLOTS,
    fallbackSlots: config.ATLAS_SLOTS,
    fallbackCtx: config.ATLAS_CTX_SIZE,
  };
  let engine: ProxyEngine | undefined;
  let guard: SlotGuard | undefined;
  let draining = false;
  let stopped = false;
  let stopHeartbeat: ((last?: { beat: boolean }) => void) | undefined;
  let beat: (() => void) | undefined;
  const modelId = () => config.ATLAS_MODEL_ID ?? engine?.upstream.model ?? config.ATLAS_UPSTREAM_MODEL ?? "unknown";

  const health = new UpstreamHealth(upstreamConfig, (state) => {
    if (engine === undefined || stopped) return;
    if (state.ok) {
      log.info({ upstream: shownUrl(url) }, `Upstream answers again: worker ${workerId} takes leases`);
      beat?.();
    } else {
      log.warn({ upstream: shownUrl(url), detail: state.detail }, `Upstream is down: worker ${workerId} leaves the pool until it answers`);
      guard?.giveBackAll();
      stopHeartbeat?.();
      stopHeartbeat = undefined;
    }
  });
  /** Started with the registration: the model's id is known from then on. */
  let metrics: WorkerMetrics | undefined;

  const register = (d: Discovered) => {
    const e = new ProxyEngine({ url, apiKey: config.ATLAS_UPSTREAM_API_KEY, upstream: d, onUpstreamFault: (err) => health.down(err) });
    const g = new SlotGuard(d.slots);
    engine = e;
    guard = g;
    health.expect(d);
    const model = modelId();
    const m = startWorkerMetrics(bus, { workerId, model, engine: e, intervalMs: config.ATLAS_METRICS_INTERVAL });
    metrics = m;
    const handler: GenerateHandler = async (req, c) => {
      checkModel(req, model, workerId);
      const session = req.session ?? null;
      const startedAt = Date.now();
      // The lease ends as on a local worker (lease_run.ts).
      const leased = runLease(bus, g, workerId, req, c);
      try {
        // A lease granted just before the upstream went down ends here (released, not run).
        if (!health.state.ok) {
          throw new BusError("unavailable", `Worker "${workerId}" cannot reach its upstream: ${health.state.detail}`, { retryAfterS: 1 });
        }
        const placement = { slot: req.lease?.slot, fencingToken: req.lease?.fencing_token, startedAt };
        const end = await m.track(
          req.request_id,
          () =>
            e.generate(req, {
              signal: leased.signal,
              onChunk: (chunk) => void c.send(chunk),
              ...(req.lease === undefined ? {} : { slot: req.lease.slot }),
              prepare: async (slot) => g.setSession(slot.slot, session, req.cache_strategy),
            }),
          placement,
        );
        if (session !== null && req.lease !== undefined) leased.keep(e.slotStates()[req.lease.slot]?.tokens ?? 0);
        const credit = leased.finish(!draining);
        // The upstream's prompt cache, where it reports one, is this slot's L1.
        const cacheTier = end.usage.cached_tokens > 0 ? ("l1" as const) : ("miss" as const);
        return { ...end, cache_tier: cacheTier, worker_id: workerId, fencing_token: req.lease?.fencing_token ?? null, credit };
      } finally {
        leased.done();
      }
    };
    serveWorker(bus, {
      workerId,
      guard: g,
      log,
      handler,
      draining: () => draining,
      onDrain: () => {
        draining = true;
        g.giveBackAll();
        log.info({}, `Worker ${workerId} drained (a proxy worker holds no KV state to move)`);
      },
    });
    bus.setMetadata(
      workerMetadata({ worker_id: workerId, model, fingerprint: d.fingerprint, created: d.created, ctx_size: d.ctxSize, slots: d.slots }),
    );
    beat = () => {
      stopHeartbeat ??= startHeartbeat(
        bus,
        {
          workerId,
          model,
          fingerprint: d.fingerprint,
          ctxSize: d.ctxSize,
          slots: () => e.slotStates(),
          guard: g,
          l2: () => [],
          draining: () => draining,
        },
        options.heartbeatMs,
      );
    };
    if (health.state.ok) beat();
    log.info(
      { model, upstream: shownUrl(url), kind: d.kind, upstream_model: d.model, slots: d.slots, slots_from: d.slotsFrom, ctx: d.ctxSize },
      `Worker ${workerId} serves "${model}" through the ${d.kind} upstream at ${shownUrl(url)}`,
    );
  };

  // Discovery until the upstream answers; then the probe keeps the health. A stop ends it at
  // once, also during the probe or the wait: nothing registers after it.
  const discovering = new AbortController();
  const discover = async () => {
    let warned = false;
    while (!discovering.signal.aborted) {
      try {
        const d = await discoverUpstream(upstreamConfig, discovering.signal);
        if (discovering.signal.aborted) return;
        await health.probe();
        if (discovering.signal.aborted) return;
        register(d);
        health.start(UPSTREAM_PROBE_MS);
        return;
      } catch (err) {
        if (discovering.signal.aborted) return;
        health.down(err);
        // The health's detail, not the error: that may hold the URL's secrets.
        const detail = health.state.detail;
        if (!warned) log.warn({ upstream: shownUrl(url), detail }, `Upstream does not answer yet: worker ${workerId} waits for it`);
        warned = true;
        await sleep(UPSTREAM_PROBE_MS, undefined, { signal: discovering.signal, ref: false }).catch(() => {});
      }
    }
  };
  const discovered = discover();

  return {
    health: (): HealthStatus => {
      const s = health.state;
      const upstream = {
        url: shownUrl(url),
        reachable: s.ok,
        detail: s.detail,
        checked_at: new Date(s.checked_at || Date.now()).toISOString(),
      };
      if (engine === undefined) {
        return {
          state: "down",
          checks: { upstream: { ok: false, detail: s.detail } },
          details: { worker_id: workerId, backend: { type: "openai", upstream } },
        };
      }
      const d = engine.upstream;
      return {
        state: s.ok ? "ok" : "down",
        checks: { model: { ok: true, detail: modelId() }, upstream: { ok: s.ok, detail: s.detail } },
        details: {
          worker_id: workerId,
          model: modelId(),
          fingerprint: d.fingerprint,
          slots: engine.info.slots,
          free_slots: engine.freeSlots,
          queued: engine.queued,
          slot_states: engine.slotStates(),
          tiers: { draining },
          backend: {
            type: "openai",
            upstream: { ...upstream, kind: d.kind, model: d.model, slots: d.slots, slots_from: d.slotsFrom, ctx_size: d.ctxSize },
          },
        },
      };
    },
    stop: async () => {
      stopped = true;
      discovering.abort();
      health.stop();
      await discovered;
      // The last heartbeat says "draining"; idle slot credits go back now; running requests finish.
      draining = true;
      guard?.giveBackAll();
      stopHeartbeat?.({ beat: true });
      metrics?.stop();
    },
    dispose: async () => {
      await engine?.dispose();
    },
  };
}
