/**
 * The inference worker: loads one model (or generates the demo model), owns its slots through
 * the engine, and serves `worker.<id>.generate` and the queue group `worker.any.generate`.
 * A model that fails to load is reported in health and the worker stays out of rotation.
 *
 * @module
 */
import { stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import type { Config } from "@atlas/config";
import { type CacheTier, isWorkerCredential, MemoryDeleted, ServiceName, sessionKey, workerMetadata } from "@atlas/contracts";
import { ensureDemoModel } from "@atlas/gguf";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { Engine, type GpuChoice } from "./engine.ts";
import { SlotGuard, startHeartbeat } from "./heartbeat.ts";
import { checkModel, type GenerateHandler, runLease, serveWorker } from "./lease_run.ts";
import { startWorkerMetrics } from "./metrics.ts";
import { startProxyWorker } from "./proxy_service.ts";
import { KvTiers } from "./tiers.ts";

/** Heartbeat period, in ms (the scheduler declares a worker dead after three missed ones). */
export const HEARTBEAT_MS = 1000;

/** The model id clients name: `ATLAS_MODEL_ID`, else the file name without `.gguf`. */
export function modelIdOf(path: string, configured: string | undefined): string {
  return configured ?? basename(path).replace(/\.gguf$/i, "");
}

/**
 * What the worker runs on, for its health details (and so `/v1/atlas/status`): the GPU backend it
 * got (`false`: the CPU, whatever `ATLAS_GPU` asked), the llama.cpp binary (`source`: built by
 * `npm run build:engine`, `prebuilt`), and the GPU's memory while one is in use.
 */
export async function backendDetails(engine: Engine, requested: GpuChoice): Promise<Record<string, unknown>> {
  const { gpu, binary, openmp, release, gpuLayers, threads } = engine.info.backend;
  const vram = await engine.vram().catch(() => null);
  return {
    gpu,
    gpu_requested: requested,
    gpu_layers: gpuLayers,
    binary,
    openmp,
    threads,
    llama_cpp: release,
    vram: vram === null ? null : { total_bytes: vram.total, used_bytes: vram.used, free_bytes: vram.free },
  };
}

/** Starts the worker; never throws for a bad model (it reports it instead). */
export async function startWorker(ctx: ServiceContext): Promise<ServiceHandle> {
  // The backend seam: a proxy in front of an OpenAI-compatible server instead of llama.cpp.
  if (ctx.config.ATLAS_WORKER_BACKEND === "openai") return startProxyWorker(ctx, { heartbeatMs: HEARTBEAT_MS });
  const { bus, config, log } = ctx;
  const workerId = bus.instance;
  const modelPath = config.ATLAS_MODEL ?? (await ensureDemoModel(resolve(join(config.ATLAS_DATA_DIR, "models")), { preset: "tiny" }));
  if (config.ATLAS_MODEL === undefined) {
    log.warn(
      { model: modelPath },
      "No ATLAS_MODEL set: serving the generated random-weight DEMO model (it answers nonsense but runs the real engine). " +
        "Point ATLAS_MODEL at a real GGUF file to serve a real model.",
    );
  }
  const modelId = modelIdOf(modelPath, config.ATLAS_MODEL_ID);
  let engine: Engine | undefined;
  let loadError: string | undefined;
  try {
    engine = await Engine.load({
      modelPath,
      slots: config.ATLAS_SLOTS,
      contextSize: config.ATLAS_CTX_SIZE,
      threads: config.ATLAS_THREADS,
      gpu: config.ATLAS_GPU,
      gpuLayers: config.ATLAS_GPU_LAYERS,
      logger: log,
    });
  } catch (err) {
    loadError = err instanceof Error ? err.message : String(err);
    log.error({ err, model: modelPath }, `Cannot load model "${modelPath}": this worker stays out of rotation`);
  }

  const metrics = startWorkerMetrics(bus, { workerId, model: modelId, engine, intervalMs: config.ATLAS_METRICS_INTERVAL, loadError });
  let stopHeartbeat: (last?: { beat: boolean }) => void = () => {};
  let stopTiers = () => {};
  /** After the shutdown save: the snapshot scratch folders go (snapshot_seal.ts). */
  let closeTiers = async () => {};
  /** Set by a drain command or at shutdown: heartbeats say so, and the scheduler leases no slot here. */
  let draining = false;
  let tierState = (): Record<string, unknown> => ({});
  /** At shutdown, with the bus still connected: the slots' sessions go to L3 (see saveSessions). */
  let shutdownSave: ((signal: AbortSignal) => Promise<void>) | undefined;
  /** Aborted when the service stops: long work it started by itself (a drain) ends. */
  const stopping = new AbortController();
  let guardRef: SlotGuard | undefined;
  if (engine !== undefined) {
    const e = engine;
    const created = Math.floor((await stat(modelPath)).mtimeMs / 1000);
    const guard = new SlotGuard(e.info.slots);
    guardRef = guard;
    const tiers = await KvTiers.open({
      jetstream: bus.jetstream,
      prefix: bus.prefix,
      workerId,
      fingerprint: e.info.fingerprint,
      dir: resolve(config.ATLAS_DATA_DIR, "l2", workerId),
      l2BudgetBytes: config.ATLAS_L2_BUDGET_MB * 1024 * 1024,
      l3BudgetBytes: config.ATLAS_L3_BUDGET_MB * 1024 * 1024,
      restore: config.ATLAS_KV_RESTORE,
      atRest: config, // compression and encryption of snapshots (docs/security.md, "Encryption at rest")
      log,
    });
    let drained = false;
    tierState = () => ({ l2_bytes: tiers.l2Bytes, l2_sessions: tiers.l2Entries().length, draining, drained });
    /**
     * Saves every session the slots hold, then every L2 snapshot, to L3: the ones with the most
     * tokens (the dearest to recompute) first, each slot's straight on to L3, so that a save cut
     * short by `signal` has kept the most valuable. Returns how many sessions reached L3.
     */
    const saveSessions = async (signal?: AbortSignal): Promise<number> => {
      const resident = e
        .slotStates()
        .map((s) => ({ slot: s.slot, tokens: s.tokens, session: guard.session(s.slot), strategy: guard.strategy(s.slot) }))
        .filter((s): s is typeof s & { session: string } => s.session !== null && s.tokens > 0)
        .sort((a, b) => b.tokens - a.tokens);
      let saved = 0;
      for (const s of resident) {
        if (signal?.aborted) return saved;
        await tiers.snapshotSlot((path) => e.saveSlot(s.slot, path, signal), s.session, s.strategy);
        await tiers.promote(s.session);
        saved += 1;
      }
      return saved + (await tiers.promoteAll(signal));
    };
    /** Moves every resident session and every L2 snapshot to L3 (drain); a stop cuts it short (the shutdown save goes on). */
    const drain = async () => {
      draining = true;
      guard.giveBackAll();
      const moved = await saveSessions(stopping.signal);
      if (stopping.signal.aborted) {
        log.info({ moved }, `Worker ${workerId} stopped while draining: the shutdown save takes the rest to L3`);
        return;
      }
      drained = true;
      log.info({ moved }, `Worker ${workerId} drained: its sessions are in L3`);
    };
    shutdownSave = async (signal) => {
      const t0 = performance.now();
      const saved = await saveSessions(signal).catch((err: unknown) => {
        log.warn({ err }, "Saving the warm sessions to L3 at shutdown failed");
        return 0;
      });
      const ms = Math.round(performance.now() - t0);
      if (signal.aborted) log.warn({ saved, ms }, "Shutdown grace ran out while saving sessions to L3: the rest are cold");
      else log.info({ saved, ms }, `Worker ${workerId} saved its warm sessions to L3`);
    };
    const autoSave =
      config.ATLAS_AUTO_SAVE_INTERVAL > 0
        ? setInterval(
            () => void tiers.promoteAll().catch((err: unknown) => log.warn({ err }, "L2 to L3 promotion failed")),
            config.ATLAS_AUTO_SAVE_INTERVAL * 1000,
          )
        : undefined;
    stopTiers = () => clearInterval(autoSave);
    closeTiers = async () => tiers.atRest?.close();
    bus.subscribe(
      MemoryDeleted,
      async (ev) => {
        const session = sessionKey(ev.tenant, ev.session_id);
        for (const st of e.slotStates()) guard.clear(st.slot, session);
        await tiers.forget(session);
      },
      {},
    );
    const handler: GenerateHandler = async (req, c) => {
      checkModel(req, modelId, workerId);
      const session = req.session ?? null;
      // A leased request runs on its slot under its fencing token; the fallback picks a slot.
      // Its `generation` metric event says which lease held which slot, from admission to end.
      const startedAt = Date.now();
      const leased = runLease(bus, guard, workerId, req, c);
      let restored: CacheTier | undefined;
      try {
        const placement = { slot: req.lease?.slot, fencingToken: req.lease?.fencing_token, startedAt };
        const end = await metrics.track(
          req.request_id,
          () =>
            e.generate(req, {
              signal: leased.signal,
              onChunk: (chunk) => void c.send(chunk),
              ...(req.lease === undefined ? {} : { slot: req.lease.slot }),
              // With the slot held: snapshot the session it held if another one takes it over, and
              // bring this session's state in from L2/L3 when that beats recomputing it.
              prepare: async (slot) => {
                const held = { session: guard.session(slot.slot), strategy: guard.strategy(slot.slot) };
                restored = await tiers.prepare(slot, held, session, {
                  fresh: req.session_fresh === true,
                  strategy: req.cache_strategy,
                  signal: leased.signal,
                });
                guard.setSession(slot.slot, session, req.cache_strategy);
              },
            }),
          placement,
        );
        const cacheTier: CacheTier = restored ?? (end.usage.cached_tokens > 0 ? "l1" : "miss");
        if (end.usage.prompt_tokens > end.usage.cached_tokens) {
          tiers.cost.observePrefill(end.usage.prompt_tokens - end.usage.cached_tokens, end.timings.ttft_ms);
        }
        // What the slot now holds for the session's next turn (a sessionless slot keeps nothing).
        if (session !== null && req.lease !== undefined) leased.keep(e.slotStates()[req.lease.slot]?.tokens ?? 0);
        // A lease its holder asked to keep stays a slot credit (not while draining).
        const credit = leased.finish(!draining);
        return { ...end, cache_tier: cacheTier, worker_id: workerId, fencing_token: req.lease?.fencing_token ?? null, credit };
      } finally {
        leased.done();
      }
    };
    serveWorker(bus, {
      workerId,
      guard,
      log,
      handler,
      draining: () => draining,
      onDrain: () => void drain().catch((err: unknown) => log.error({ err }, "Drain failed")),
    });
    bus.setMetadata(
      workerMetadata({
        worker_id: workerId,
        model: modelId,
        fingerprint: e.info.fingerprint,
        created,
        ctx_size: e.info.contextSize,
        slots: e.info.slots,
      }),
    );
    stopHeartbeat = startHeartbeat(
      bus,
      {
        workerId,
        model: modelId,
        fingerprint: e.info.fingerprint,
        ctxSize: e.info.contextSize,
        slots: () => e.slotStates().map((x) => ({ slot: x.slot, busy: x.busy, tokens: x.tokens })),
        guard,
        l2: () => tiers.l2Entries(),
        draining: () => draining,
      },
      HEARTBEAT_MS,
    );
    log.info(
      { model: modelId, fingerprint: e.info.fingerprint, slots: e.info.slots, ctx: e.info.contextSize },
      `Worker ${workerId} serves "${modelId}"`,
    );
  }

  return {
    health: async () =>
      engine === undefined
        ? {
            state: "down",
            checks: { model: { ok: false, detail: loadError ?? "not loaded" } },
            details: { worker_id: workerId, model_path: modelPath, backend: { gpu_requested: config.ATLAS_GPU } },
          }
        : {
            state: "ok",
            checks: { model: { ok: true, detail: modelId } },
            details: {
              worker_id: workerId,
              model: modelId,
              fingerprint: engine.info.fingerprint,
              slots: engine.info.slots,
              free_slots: engine.freeSlots,
              queued: engine.queued,
              slot_states: engine.slotStates(),
              tiers: tierState(),
              backend: await backendDetails(engine, config.ATLAS_GPU),
            },
          },
    stop: async () => {
      stopping.abort();
      stopTiers();
      // The last heartbeat says "draining": no new leases from now on; what runs finishes, and
      // the idle slot credits go back to the scheduler now.
      draining = true;
      guardRef?.giveBackAll();
      stopHeartbeat({ beat: true });
      metrics.stop();
    },
    beforeDisconnect: async (signal) => {
      if (config.ATLAS_KV_SAVE_ON_STOP) await shutdownSave?.(signal);
    },
    dispose: async () => {
      await engine?.dispose();
      await closeTiers();
    },
  };
}

/**
 * The worker's id: `ATLAS_WORKER_ID`, else its NATS user when that is one of the workers' pool
 * (`worker-<n>`: the user may only use that id's subjects, docs/adr/0015-worker-credentials.md),
 * else a random one. A pool user with another `ATLAS_WORKER_ID` is a configuration error.
 */
export function resolveWorkerId(config: Config): string {
  const user = isWorkerCredential(config.NATS_USER) ? config.NATS_USER : undefined;
  if (user !== undefined && config.ATLAS_WORKER_ID !== undefined && config.ATLAS_WORKER_ID !== user) {
    throw new Error(
      `ATLAS_WORKER_ID "${config.ATLAS_WORKER_ID}" differs from the NATS user "${user}", which may only serve worker id "${user}"`,
    );
  }
  return config.ATLAS_WORKER_ID ?? user ?? `w-${crypto.randomUUID().slice(0, 8)}`;
}

/** The inference-worker service, for `runService` and in-process tests. */
export const workerService: ServiceDefinition = {
  name: ServiceName.worker,
  description: "llama.cpp inference worker",
  instance: resolveWorkerId,
  start: startWorker,
};
