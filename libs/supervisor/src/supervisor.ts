/**
 * The supervisor of `npm start`: an embedded `nats-server` unless `NATS_URL` is given, each
 * service as a child process in start order, restarts with backoff, its own health on the bus,
 * a log line once the stack answers completions (`ready.ts`), and an orderly stop.
 *
 * @module
 */
import { resolve } from "node:path";
import { Bus, type HealthStatus, type NatsBus } from "@atlas/bus";
import { type Config, natsServers } from "@atlas/config";
import { ATLAS_VERSION, ServiceName } from "@atlas/contracts";
import { createLogger, type Logger } from "@atlas/log";
import {
  type BackoffOptions,
  backoffDelayMs,
  type ChildSpec,
  ChildState,
  type ChildStatus,
  DEFAULT_BACKOFF,
  EXIT_CONFIG,
  SupervisedChild,
} from "./child.ts";
import { childLogFormat, defaultChildSpecs, ignoredModelVariables, REPO_ROOT } from "./child_specs.ts";
import { type EmbeddedNats, startEmbeddedNats } from "./nats.ts";
import { announceReady } from "./ready.ts";
import { assertScriptsExist, RUNTIME } from "./runtime.ts";

/** The supervisor's service name on the bus (discovery and health). */
export const SUPERVISOR_SERVICE = "supervisor";

/** Exit code after a second Ctrl-C (everything killed at once). */
export const EXIT_KILLED = 130;

/** What {@link SupervisorOptions.beforeWorkers} receives. */
export interface BeforeWorkersContext {
  config: Config;
  log: Logger;
  /** The environment the children get so far (with `NATS_URL` and `ATLAS_DATA_DIR` decided). */
  env: Readonly<NodeJS.ProcessEnv>;
  /** Aborted when the supervisor is stopped before the step finishes. */
  signal: AbortSignal;
}

/** Options for {@link startSupervisor}. */
export interface SupervisorOptions {
  config: Config;
  /** Default: a logger from `createLogger` with the configured level and format. */
  log?: Logger;
  /** Base environment of the children; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Working directory of the children; default the repository root. */
  rootDir?: string;
  /** What to run; default {@link defaultChildSpecs} of the configuration. */
  services?: readonly ChildSpec[];
  /**
   * A step run once, just before the first inference worker is spawned (not at all when there
   * are no workers). The variables it returns are added to the environment of every child spawned
   * from then on (workers, the api, and restarts). A rejection stops the supervisor with exit 1.
   */
  beforeWorkers?: (ctx: BeforeWorkersContext) => Promise<Record<string, string>>;
  /** `nats-server` binary for the embedded server; default `nats-server` on the PATH. */
  natsServerBinary?: string;
  /** Port the embedded server tries first; default 4222 (then an ephemeral port). */
  natsPort?: number;
  backoff?: Partial<BackoffOptions>;
  /** A child still alive after this long counts as running; default 1000 ms. */
  readyAfterMs?: number;
  /** Whether our stdout is a terminal (decides `ATLAS_LOG_FORMAT` for children); default `process.stdout.isTTY`. */
  stdoutIsTTY?: boolean;
}

/** A running supervisor. */
export interface Supervisor {
  /** The NATS URL the children use. */
  readonly natsUrl: string;
  /** The embedded server's pid, or undefined when `NATS_URL` was given. */
  readonly natsPid: number | undefined;
  /** Settles with the exit code once everything has stopped: 0 after {@link stop}, 78 after a configuration error, 1 after a failed start step, 130 after {@link kill}. */
  readonly done: Promise<number>;
  /** The supervisor's own bus, once connected. */
  readonly bus: NatsBus | undefined;
  /** Every child's status, in start order. */
  children(): ChildStatus[];
  /** The health the supervisor answers on the bus. */
  health(): HealthStatus;
  /** SIGTERM to every child, SIGKILL after the grace period, then stops NATS. Safe to call twice. */
  stop(): Promise<number>;
  /**
   * SIGKILL to every child and the embedded server, sent at once (synchronously); the promise
   * settles when they have exited (at most 2 s).
   */
  kill(): Promise<void>;
}

/**
 * Starts the supervisor: the embedded NATS server (unless `NATS_URL` is set), then the
 * children in order. Resolves once NATS is up and the start sequence is under way; rejects when
 * the embedded server cannot start (a `NatsServerNotFoundError` says how to get one).
 */
export async function startSupervisor(options: SupervisorOptions): Promise<Supervisor> {
  const { config } = options;
  const log = options.log ?? createLogger({ service: SUPERVISOR_SERVICE, level: config.ATLAS_LOG_LEVEL, format: config.ATLAS_LOG_FORMAT });
  const rootDir = options.rootDir ?? REPO_ROOT;
  const dataDir = resolve(config.ATLAS_DATA_DIR);
  const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...options.backoff };
  const specs = options.services ?? defaultChildSpecs(config, rootDir);
  if (options.services === undefined) {
    // Before anything starts: a missing build fails now, with the command that fixes it.
    if (RUNTIME === "compiled") assertScriptsExist(specs.map((s) => s.script));
    log.info(
      { runtime: RUNTIME },
      RUNTIME === "compiled" ? "Running the compiled services (dist/, plain node)" : "Running the TypeScript sources through tsx",
    );
    if (config.ATLAS_MODELS !== undefined) {
      const ignored = ignoredModelVariables(config, options.env ?? process.env);
      if (ignored.length > 0) {
        log.warn({ ignored }, `ATLAS_MODELS is set, so ${ignored.join(", ")} ${ignored.length === 1 ? "is" : "are"} ignored`);
      }
      const served = config.ATLAS_MODELS.map((m) => `${m.id} × ${m.workers}`).join(", ");
      log.info({ models: config.ATLAS_MODELS.map((m) => ({ id: m.id, path: m.path, workers: m.workers })) }, `Models: ${served}`);
    }
  }

  let nats: EmbeddedNats | undefined;
  let natsUrl: string;
  if (config.NATS_URL === undefined) {
    nats = await startEmbeddedNats({
      storeDir: resolve(dataDir, "nats"),
      log: log.child({ component: "nats-server" }),
      ...(options.natsServerBinary === undefined ? {} : { binary: options.natsServerBinary }),
      ...(options.natsPort === undefined ? {} : { port: options.natsPort }),
    });
    natsUrl = nats.url;
    log.info({ nats_url: natsUrl, nats_pid: nats.pid, store: nats.storeDir }, `Embedded nats-server listening on ${natsUrl}`);
  } else {
    natsUrl = config.NATS_URL;
    log.info({ nats_url: hideCredentials(natsUrl) }, `Using NATS at ${hideCredentials(natsUrl)}`);
  }

  const env: NodeJS.ProcessEnv = {
    ...(options.env ?? process.env),
    NATS_URL: natsUrl,
    ATLAS_DATA_DIR: dataDir,
    ATLAS_LOG_FORMAT: childLogFormat(config.ATLAS_LOG_FORMAT, options.stdoutIsTTY ?? process.stdout.isTTY === true),
  };
  const abort = new AbortController();
  let exitCode = 0;
  let stopping: Promise<number> | undefined;
  let bus: NatsBus | undefined;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => {
    resolveDone = r;
  });

  const children = specs.map(
    (spec) =>
      new SupervisedChild({
        spec,
        cwd: rootDir,
        env: () => env,
        log,
        backoff,
        ...(options.readyAfterMs === undefined ? {} : { readyAfterMs: options.readyAfterMs }),
        onConfigError: (child) => {
          log.fatal({ child: child.label }, `Stopping everything: "${child.label}" has a configuration error (see its message above)`);
          void stop(EXIT_CONFIG);
        },
      }),
  );

  function health(): HealthStatus {
    const statuses = children.map((c) => c.status());
    const waiting = statuses.filter((s) => s.state === ChildState.backoff);
    return {
      state: waiting.length > 0 ? "degraded" : "ok",
      checks: {
        children: {
          ok: waiting.length === 0,
          ...(waiting.length === 0
            ? {}
            : { detail: `Restarting: ${waiting.map((s) => (s.instance === null ? s.name : `${s.name}[${s.instance}]`)).join(", ")}` }),
        },
      },
      details: {
        children: statuses,
        nats: { url: hideCredentials(natsUrl), embedded: nats !== undefined, pid: nats?.pid ?? null },
      },
    };
  }

  async function stop(code = 0): Promise<number> {
    if (stopping !== undefined) return stopping;
    exitCode = code;
    abort.abort(new Error("Supervisor is stopping"));
    stopping = (async () => {
      // In-flight work gets the grace, then a worker saves its warm sessions to L3 for as long again.
      const graceMs = 2 * config.ATLAS_SHUTDOWN_GRACE_MS + 2000;
      log.info({ children: children.length, grace_ms: graceMs }, "Stopping every child");
      const all = Promise.all(children.map((c) => c.stop()));
      let timer: NodeJS.Timeout | undefined;
      const late = await Promise.race([
        all.then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (late) {
        const stragglers = children.filter((c) => c.pid !== undefined);
        log.warn({ children: stragglers.map((c) => c.label) }, `Killing ${stragglers.length} child(ren) still running after ${graceMs} ms`);
        for (const c of stragglers) c.kill();
        await withTimeout(all, 5000);
      }
      if (bus !== undefined) await withTimeout(bus.close({ graceMs: 0 }), 2000);
      if (nats !== undefined) {
        await nats.stop();
        log.info("Embedded nats-server stopped");
      }
      log.info({ exit_code: exitCode }, "Supervisor stopped");
      resolveDone(exitCode);
      return exitCode;
    })();
    return stopping;
  }

  function kill(): Promise<void> {
    abort.abort(new Error("Supervisor was killed"));
    for (const c of children) c.kill();
    nats?.kill();
    bus?.nc.close().catch(() => undefined);
    exitCode = EXIT_KILLED;
    // Wait (briefly) for the processes to be reaped, so none is left behind as a zombie.
    const gone = Promise.all([...children.map((c) => c.whenExited()), nats?.exited]);
    return withTimeout(gone, 2000).then(() => resolveDone(EXIT_KILLED));
  }

  // The embedded server is part of the supervisor: when it dies, start it again on its port.
  if (nats !== undefined) void watchNats();
  async function watchNats(): Promise<void> {
    let failures = 0;
    while (nats !== undefined && !abort.signal.aborted) {
      const current: EmbeddedNats = nats;
      const exit = await current.exited;
      if (current.stopping || abort.signal.aborted) return;
      failures += 1;
      const delayMs = backoffDelayMs(failures, backoff);
      log.error({ code: exit.code, signal: exit.signal, delay_ms: delayMs }, `Embedded nats-server exited; restarting it in ${delayMs} ms`);
      await sleep(delayMs);
      if (abort.signal.aborted) return;
      try {
        nats = await startEmbeddedNats({
          storeDir: current.storeDir,
          port: current.port,
          log: log.child({ component: "nats-server" }),
          ...(options.natsServerBinary === undefined ? {} : { binary: options.natsServerBinary }),
        });
        if (nats.url !== natsUrl)
          log.error({ nats_url: nats.url }, `nats-server came back on ${nats.url}, not ${natsUrl}; the services cannot reach it`);
        else log.info({ nats_pid: nats.pid }, "Embedded nats-server restarted");
        if (abort.signal.aborted) nats.kill();
      } catch (err) {
        log.error({ err }, "Cannot restart the embedded nats-server");
      }
    }
  }

  // Join the bus in the background: the children do not wait for the supervisor.
  void Bus.connect({
    servers: config.NATS_URL === undefined ? [natsUrl] : natsServers(config),
    prefix: config.ATLAS_NATS_PREFIX,
    service: { name: SUPERVISOR_SERVICE, version: ATLAS_VERSION, description: "Starts, watches and restarts the ATLAS services" },
    logger: log,
    ...(config.NATS_USER === undefined ? {} : { user: config.NATS_USER, pass: config.NATS_PASSWORD ?? "" }),
  }).then(
    (connected) => {
      if (stopping !== undefined || abort.signal.aborted) {
        void connected.close({ graceMs: 0 });
        return;
      }
      bus = connected;
      connected.serveHealth(health);
      log.info({ instance: connected.instance, prefix: connected.prefix }, "Supervisor joined the bus");
    },
    (err: unknown) => log.error({ err }, "Supervisor cannot join the bus; health is not served"),
  );

  // Start the children in order; the step before the workers runs just before the first one.
  void (async () => {
    let stepDone = options.beforeWorkers === undefined;
    for (const child of children) {
      if (abort.signal.aborted) return;
      if (!stepDone && child.spec.name === ServiceName.worker) {
        stepDone = true;
        try {
          const extra = await options.beforeWorkers?.({ config, log, env, signal: abort.signal });
          Object.assign(env, extra);
        } catch (err) {
          if (abort.signal.aborted) return;
          log.fatal({ err }, "The step before the workers failed; stopping");
          void stop(1);
          return;
        }
        if (abort.signal.aborted) return;
      }
      child.start();
    }
    log.info({ children: children.length }, `Started ${children.length} child(ren)`);
    await announceReady({ bus: () => bus, log, signal: abort.signal });
  })();

  return {
    natsUrl,
    get natsPid() {
      return nats?.pid;
    },
    done,
    get bus() {
      return bus;
    },
    children: () => children.map((c) => c.status()),
    health,
    stop: () => stop(0),
    kill,
  };
}

/** `nats://user:secret@host:4222` → `nats://***@host:4222`, for logs and health. */
export function hideCredentials(urls: string): string {
  return urls.replace(/\/\/[^/@,\s]+@/g, "//***@");
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<undefined>((r) => {
      timer = setTimeout(() => r(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
