/**
 * Starts a real ATLAS cluster inside the test process: a fresh `nats-server` (ephemeral port,
 * temp store) and the chosen services, each with its own NATS connection exactly as in
 * production, the api on an ephemeral HTTP port, workers on the generated tiny model.
 *
 * The nats-server runs under the generated permissions (`libs/contracts/src/service_permissions/<name>.ts`):
 * every service connects as its own user and is refused outside its declared subjects, as in
 * production (docs/security.md). A worker whose id is one of the pool's users (`worker-<n>`, the
 * default ids here) connects as that user, allowed only its own id's subjects
 * (docs/adr/0015-worker-credentials.md); a worker given another id connects as the shared
 * `inference-worker` user (any id). A client without credentials (a test's own connection) gets
 * the unrestricted `test` user. `stack.violations()` lists what the server refused (across
 * NATS restarts), and `close()` fails on any of them: a service outside its declared subjects is
 * a bug in its permissions declaration or in the service. A test that provokes refusals on purpose
 * declares them with `stack.allowViolations(match)`.
 *
 * Fault tests run services as real child processes too (`stack.spawn`), so a SIGKILL is real.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { apiService } from "@atlas/api";
import { type Config, loadConfig } from "@atlas/config";
import { workerPoolPermissions } from "@atlas/contracts";
import { type ChatTemplateFamily, ensureDemoModel } from "@atlas/gguf";
import { workerService } from "@atlas/inference-worker";
import { createLogger, type Logger } from "@atlas/log";
import { metricsService } from "@atlas/metrics";
import { persistenceService } from "@atlas/persistence";
import { schedulerService } from "@atlas/scheduler";
import { launchService, type RunningService, type ServiceDefinition } from "@atlas/service";
import { loadServicePermissions, type NatsUser, randomPassword, renderNatsAuthConfig } from "@atlas/supervisor";
import { type NatsCluster, type NatsServer, startNatsCluster, startNatsServer } from "@atlas/testing";

/** The repository root (services are spawned from their `main.ts`). */
export const REPO = fileURLToPath(new URL("../../", import.meta.url));

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
  /** Run nats-server under the generated per-service permissions; default true. */
  permissions?: boolean;
  /** Users in the workers' pool (`worker-1`…`worker-<n>`) with permissions on; default 16. */
  maxWorkers?: number;
  /** Where the in-process services' JSON log lines go (default: nowhere, or stdout with TEST_LOG_LEVEL). */
  logDestination?: { write(line: string): void };
  /** Log level with a `logDestination` (default `trace`; TEST_LOG_LEVEL wins). */
  logLevel?: string;
  /** Chat template of the test model (see {@link testModel}); default ChatML. */
  chatTemplate?: ChatTemplateFamily;
  /**
   * Run on a JetStream cluster of `nodes` nats-servers (`startNatsCluster`, same users and
   * permissions) instead of one: every service gets every node's URL, the list rotated per
   * service started (the n-th starts at node n mod `nodes`) and kept in that order by the
   * in-process ones, so that services prefer different nodes. See {@link Stack.cluster}.
   */
  nats?: { nodes: number };
}

/** Options for {@link testModel}. */
export interface TestModelOptions {
  /**
   * Chat template family: `"chatml"` (default: `atlas-demo-tiny.gguf`), or the real templates with
   * function calling, `"llama3.1"` (`atlas-demo-tiny-llama3.1.gguf`) and `"qwen2.5"` (`atlas-demo-tiny-qwen2.5.gguf`).
   */
  chatTemplate?: ChatTemplateFamily;
}

/** Options for {@link Stack.restartNats}. */
export interface RestartNatsOptions {
  /** Kill nats-server (SIGKILL: no clean JetStream shutdown, as a crash) instead of stopping it (SIGTERM). */
  crash?: boolean;
  /** How long it stays down before it starts again. */
  downMs?: number;
  /** Runs while it is down, with its store folder (to damage or wipe the store). */
  whileDown?: (storeDir: string) => Promise<void>;
}

/** A service running as a child process. */
export interface ChildService {
  readonly key: ServiceKey;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Settles when the process exited. */
  readonly exited: Promise<void>;
  /** The last lines it wrote to stderr (for failure messages). */
  stderr(): string;
  /** Sends a signal (SIGKILL: gone without a goodbye). */
  kill(signal?: NodeJS.Signals): void;
}

/** A running cluster. */
export interface Stack extends AsyncDisposable {
  /** The nats-server (a new object after {@link restartNats}); throws on a cluster stack. */
  readonly nats: NatsServer;
  /** The cluster, when started with the `nats` option (kill and restart nodes there). */
  readonly cluster: NatsCluster | undefined;
  readonly config: Config;
  /** `http://127.0.0.1:<port>` of the api, when it runs. */
  readonly baseUrl: string;
  readonly model: string;
  /** Running instances by service. */
  readonly running: Map<ServiceKey, RunningService[]>;
  /** NATS user and password of each service and of each pool user `worker-<n>` (with permissions on). */
  readonly credentials: ReadonlyMap<string, { user: string; password: string }>;
  /** Starts one more instance of a service (a worker gets `worker-<n>`). */
  start(key: ServiceKey, env?: Record<string, string>): Promise<RunningService>;
  /** Stops every instance of a service. */
  stop(key: ServiceKey): Promise<void>;
  /** The environment a child process of `key` gets (config, NATS credentials). */
  envFor(key: ServiceKey, env?: Record<string, string>): Record<string, string>;
  /** Starts a service as a child process (`node --import tsx services/<name>/src/main.ts`); resolves when it is up. */
  spawn(key: ServiceKey, env?: Record<string, string>): Promise<ChildService>;
  /**
   * Stops nats-server (SIGTERM, or SIGKILL with `crash`; store kept) and starts it again on the
   * same port and store, with the same users and permissions.
   */
  restartNats(options?: RestartNatsOptions): Promise<void>;
  /** Every operation nats-server refused since the stack started (all its incarnations). */
  violations(): string[];
  /** Declares refusals a test provokes on purpose (all when `match` is left out): `close()` lets them pass. */
  allowViolations(match?: (line: string) => boolean): void;
  /** Stops everything; throws when nats-server refused an operation that was not allowed. */
  close(): Promise<void>;
}

const DIRS: Record<ServiceKey, string> = {
  metrics: "metrics",
  persistence: "persistence",
  scheduler: "scheduler",
  worker: "inference-worker",
  api: "api",
};

/** The tiny test model, generated once per machine into the temp folder (deterministic). */
export function testModel(options: TestModelOptions = {}): Promise<string> {
  const { chatTemplate } = options;
  return ensureDemoModel(join(tmpdir(), "atlas-test-models"), { preset: "tiny", ...(chatTemplate === undefined ? {} : { chatTemplate }) });
}

/** Starts NATS and the chosen services. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const prefix = `t${crypto.randomUUID().slice(0, 8)}`;
  const credentials = new Map<string, { user: string; password: string }>();
  let natsConfig: string | undefined;
  if (options.permissions !== false) {
    const users: NatsUser[] = [];
    for (const p of [...loadServicePermissions(prefix), ...workerPoolPermissions(prefix, options.maxWorkers ?? 16)]) {
      const password = randomPassword();
      credentials.set(p.service, { user: p.service, password });
      users.push({ user: p.service, password, permissions: { publish: p.publish, subscribe: p.subscribe } });
    }
    users.push({ user: "test", password: randomPassword() }); // the tests' own clients: unrestricted
    natsConfig = renderNatsAuthConfig({ users, noAuthUser: "test" });
  }
  const cluster =
    options.nats === undefined
      ? undefined
      : await startNatsCluster({ nodes: options.nats.nodes, ...(natsConfig === undefined ? {} : { config: natsConfig }) });
  let nats = cluster === undefined ? await startNatsServer(natsConfig === undefined ? {} : { config: natsConfig }) : undefined;
  const storeDir = nats?.storeDir ?? (await mkdtemp(join(tmpdir(), "atlas-stack-")));
  /** Every node's URL, starting at node `n` (mod the nodes): the order a service prefers them in. */
  let started = 0;
  const natsUrl = (n: number) =>
    cluster === undefined
      ? (nats?.url ?? "")
      : [...cluster.urls.slice(n % cluster.urls.length), ...cluster.urls.slice(0, n % cluster.urls.length)].join(",");
  const model = await testModel(options.chatTemplate === undefined ? {} : { chatTemplate: options.chatTemplate });
  const baseEnv: Record<string, string> = {
    NATS_URL: natsUrl(0),
    ATLAS_NATS_PREFIX: prefix,
    ATLAS_MODEL: model,
    ATLAS_MODEL_ID: "atlas-tiny",
    ATLAS_SLOTS: "2",
    ATLAS_CTX_SIZE: "1024",
    ATLAS_DATA_DIR: join(storeDir, "data"),
    ATLAS_MEMORY_PATH: join(storeDir, "memory"),
    HOST: "127.0.0.1",
    PORT: "0",
    ATLAS_SHUTDOWN_GRACE_MS: "1000",
    ...options.env,
  };
  /** A worker with a pool id (`worker-<n>`) connects as that user, any other as the shared one. */
  const natsEnv = (key: ServiceKey, env: Record<string, string> = {}): Record<string, string> => {
    const id = key === "worker" ? env.ATLAS_WORKER_ID : undefined;
    const c = (id === undefined ? undefined : credentials.get(id)) ?? credentials.get(SERVICES[key].name);
    return c === undefined ? {} : { NATS_USER: c.user, NATS_PASSWORD: c.password };
  };
  const config = loadConfig(baseEnv);
  const level = process.env.TEST_LOG_LEVEL ?? (options.logDestination === undefined ? "silent" : (options.logLevel ?? "trace"));
  const log: Logger = createLogger({
    service: "test",
    level,
    format: "json",
    ...(options.logDestination === undefined ? {} : { destination: options.logDestination }),
  });
  const running = new Map<ServiceKey, RunningService[]>();
  const children = new Set<ChildService>();
  let workerCount = 0;
  let baseUrl = "";

  const workerEnv = (key: ServiceKey, env: Record<string, string>) =>
    key === "worker" && env.ATLAS_WORKER_ID === undefined ? { ATLAS_WORKER_ID: `worker-${++workerCount}`, ...env } : env;

  const start = async (key: ServiceKey, env: Record<string, string> = {}) => {
    const we = workerEnv(key, env);
    const c = loadConfig({ ...baseEnv, NATS_URL: natsUrl(started++), ...natsEnv(key, we), ...we });
    const r = await launchService(SERVICES[key], { config: c, log: log.child({ service: key }), noRandomize: cluster !== undefined });
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
  const envFor = (key: ServiceKey, env: Record<string, string> = {}) => {
    const we = workerEnv(key, env);
    return {
      ...baseEnv,
      ATLAS_LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "warn",
      ATLAS_LOG_FORMAT: "json",
      ...(cluster === undefined ? {} : { NATS_URL: natsUrl(started++) }),
      ...natsEnv(key, we),
      ...we,
    };
  };
  const spawnService = async (key: ServiceKey, env: Record<string, string> = {}): Promise<ChildService> => {
    const script = resolve(REPO, "services", DIRS[key], "src", "main.ts");
    const child = spawn(process.execPath, ["--import", "tsx", script], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...envFor(key, env) },
      stdio: ["ignore", process.env.TEST_LOG_LEVEL === undefined ? "ignore" : "inherit", "pipe", "ipc"],
    });
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (t: string) => {
      stderr = (stderr + t).slice(-8000);
    });
    const exited = new Promise<void>((r) => {
      if (child.exitCode !== null || child.signalCode !== null) r();
      else child.once("exit", () => r());
    });
    const handle: ChildService = {
      key,
      pid: child.pid ?? -1,
      child,
      exited,
      stderr: () => stderr,
      kill: (signal = "SIGTERM") => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      },
    };
    children.add(handle);
    void exited.then(() => children.delete(handle));
    // `runService` says "ready" over IPC once connected and started.
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`${key} did not start within 60 s:\n${stderr}`)), 60_000);
      child.on("message", (m: unknown) => {
        if ((m as { type?: unknown })?.type === "ready") {
          clearTimeout(timer);
          ok();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        fail(new Error(`${key} exited before it was ready (${child.exitCode ?? child.signalCode}):\n${stderr}`));
      });
    });
    return handle;
  };
  // Refusals of earlier incarnations of nats-server (restartNats), and those a test allowed.
  const pastViolations: string[] = [];
  const allowed: ((line: string) => boolean)[] = [];
  const violations = () => [...pastViolations, ...(nats?.violations() ?? cluster?.violations() ?? [])];
  const restartNats = async (o: RestartNatsOptions = {}) => {
    if (nats === undefined) throw new Error("This stack runs on a cluster: kill and restart its nodes with stack.cluster");
    const port = nats.port;
    if (o.crash === true) await nats.kill();
    else await nats.stop({ keepStore: true });
    pastViolations.push(...nats.violations());
    if (o.downMs !== undefined) await new Promise((r) => setTimeout(r, o.downMs));
    await o.whileDown?.(storeDir);
    nats = await startNatsServer({ port, storeDir, ...(natsConfig === undefined ? {} : { config: natsConfig }) });
  };
  /** Stops everything; returns the refusals no test allowed. */
  const shutdown = async (): Promise<string[]> => {
    for (const c of children) c.kill("SIGKILL");
    await Promise.all([...children].map((c) => c.exited));
    for (const key of ["api", "worker", "scheduler", "persistence", "metrics"] as const) await stop(key).catch(() => {});
    await nats?.stop({ keepStore: true }); // stopped first: its log is complete
    await cluster?.close(); // its nodes' logs too (violations() keeps them)
    const refused = violations().filter((line) => !allowed.some((match) => match(line)));
    await rm(storeDir, { recursive: true, force: true });
    return refused;
  };
  const close = async () => {
    const refused = await shutdown();
    // A service outside its declared subjects is a bug in its permissions declaration (or in the service).
    if (refused.length > 0) {
      throw new Error(
        `nats-server refused ${refused.length} operation(s) of the services (see docs/security.md, "NATS permissions"):\n` +
          refused.slice(0, 20).join("\n"),
      );
    }
  };

  try {
    for (const key of options.services ?? (["metrics", "persistence", "scheduler", "worker", "api"] as const)) {
      const count = key === "worker" ? (options.workers ?? 1) : 1;
      for (let i = 0; i < count; i++) await start(key);
    }
  } catch (err) {
    await shutdown();
    throw err;
  }
  return {
    get nats() {
      if (nats === undefined) throw new Error("This stack runs on a cluster: see stack.cluster");
      return nats;
    },
    cluster,
    config,
    get baseUrl() {
      return baseUrl;
    },
    model,
    running,
    credentials,
    start,
    stop,
    envFor,
    spawn: spawnService,
    restartNats,
    violations,
    allowViolations: (match = () => true) => void allowed.push(match),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Polls `check` until it returns true (for hooks, where `expect.poll` is not available). */
export async function waitFor(check: () => Promise<boolean> | boolean, options: { timeoutMs?: number; what?: string } = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    if (await Promise.resolve(check()).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${options.what ?? "a condition"}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
