/**
 * Starts a real ATLAS cluster inside the test process: a fresh `nats-server` (ephemeral port,
 * temp store) and the chosen services, each with its own NATS connection exactly as in
 * production, the api on an ephemeral HTTP port, workers on the generated tiny model.
 *
 * @module
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { apiService } from "@atlas/api";
import { type Config, loadConfig } from "@atlas/config";
import { ensureDemoModel } from "@atlas/gguf";
import { workerService } from "@atlas/inference-worker";
import { createLogger } from "@atlas/log";
import { metricsService } from "@atlas/metrics";
import { persistenceService } from "@atlas/persistence";
import { schedulerService } from "@atlas/scheduler";
import { launchService, type RunningService, type ServiceDefinition } from "@atlas/service";
import { type NatsServer, startNatsServer } from "@atlas/testing";

/** The services a test can start. */
export const SERVICES = {
  metrics: metricsService,
  persistence: persistenceService,
  scheduler: schedulerService,
  worker: workerService,
  api: apiService,
} as const satisfies Record<string, ServiceDefinition>;
/** A service a test can start. */
export type ServiceKey = keyof typeof SERVICES;

/** Options for {@link startStack}. */
export interface StackOptions {
  /** Which services; default all five. */
  services?: ServiceKey[];
  /** Workers to start when `worker` is included; default 1. */
  workers?: number;
  /** Extra environment (ATLAS_SLOTS, ATLAS_CTX_SIZE…). */
  env?: Record<string, string>;
}

/** A running cluster. */
export interface Stack extends AsyncDisposable {
  readonly nats: NatsServer;
  readonly config: Config;
  /** `http://127.0.0.1:<port>` of the api, when it runs. */
  readonly baseUrl: string;
  readonly model: string;
  /** Running instances by service. */
  readonly running: Map<ServiceKey, RunningService[]>;
  /** Starts one more instance of a service (a worker gets `worker-<n>`). */
  start(key: ServiceKey, env?: Record<string, string>): Promise<RunningService>;
  /** Stops every instance of a service. */
  stop(key: ServiceKey): Promise<void>;
  close(): Promise<void>;
}

/** The tiny test model, generated once per machine into the temp folder (deterministic). */
export function testModel(): Promise<string> {
  return ensureDemoModel(join(tmpdir(), "atlas-test-models"), { preset: "tiny" });
}

/** Starts NATS and the chosen services. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const nats = await startNatsServer();
  const model = await testModel();
  const baseEnv: Record<string, string> = {
    NATS_URL: nats.url,
    ATLAS_NATS_PREFIX: `t${crypto.randomUUID().slice(0, 8)}`,
    ATLAS_MODEL: model,
    ATLAS_MODEL_ID: "atlas-tiny",
    ATLAS_SLOTS: "2",
    ATLAS_CTX_SIZE: "1024",
    ATLAS_DATA_DIR: join(nats.storeDir, "data"),
    ATLAS_MEMORY_PATH: join(nats.storeDir, "memory"),
    HOST: "127.0.0.1",
    PORT: "0",
    ATLAS_SHUTDOWN_GRACE_MS: "1000",
    ...options.env,
  };
  const config = loadConfig(baseEnv);
  const log = createLogger({ service: "test", level: process.env.TEST_LOG_LEVEL ?? "silent", format: "json" });
  const running = new Map<ServiceKey, RunningService[]>();
  let workerCount = 0;
  let baseUrl = "";

  const start = async (key: ServiceKey, env: Record<string, string> = {}) => {
    const extra: Record<string, string> = key === "worker" ? { ATLAS_WORKER_ID: `worker-${++workerCount}`, ...env } : env;
    const c = Object.keys(extra).length === 0 ? config : loadConfig({ ...baseEnv, ...extra });
    const r = await launchService(SERVICES[key], { config: c, log: log.child({ service: key }) });
    running.set(key, [...(running.get(key) ?? []), r]);
    if (key === "api") {
      const h = await r.handle.health();
      baseUrl = String(h.details?.address ?? "");
    }
    return r;
  };
  const stop = async (key: ServiceKey) => {
    const list = running.get(key) ?? [];
    running.delete(key);
    await Promise.all(list.map((r) => r.stop()));
  };
  const close = async () => {
    for (const key of ["api", "worker", "scheduler", "persistence", "metrics"] as const) await stop(key).catch(() => {});
    await nats.stop();
  };

  try {
    for (const key of options.services ?? (["metrics", "persistence", "scheduler", "worker", "api"] as const)) {
      const count = key === "worker" ? (options.workers ?? 1) : 1;
      for (let i = 0; i < count; i++) await start(key);
    }
  } catch (err) {
    await close();
    throw err;
  }
  return {
    nats,
    config,
    get baseUrl() {
      return baseUrl;
    },
    model,
    running,
    start,
    stop,
    close,
    [Symbol.asyncDispose]: close,
  };
}
