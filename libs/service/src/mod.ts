/**
 * `@atlas/service`: the life of one service — connect to NATS, start the service, answer
 * health, and drain on shutdown. Every service's `main.ts` is one call to {@link runService};
 * tests start services in-process with {@link launchService}.
 *
 * @module
 */
import { Bus, type HealthStatus, type NatsBus } from "@atlas/bus";
import { type Config, loadConfigOrExit, natsServers } from "@atlas/config";
import { ATLAS_VERSION } from "@atlas/contracts";
import { createLogger, type Logger } from "@atlas/log";

export { type PromLabels, type PromSample, PromText, type PromType } from "./prometheus.ts";

/** What a started service hands back to its runner. */
export interface ServiceHandle {
  /** This instance's health, for the health subject. */
  health(): HealthStatus | Promise<HealthStatus>;
  /** Stops taking new work from outside NATS (the api closes HTTP); the bus drains after it. */
  stop(): Promise<void>;
  /**
   * Runs once the bus takes no more work and its in-flight handlers ended, while the NATS
   * connection is still open, within `signal` (aborted after `ATLAS_SHUTDOWN_GRACE_MS`): the
   * worker saves its warm sessions to L3 here.
   */
  beforeDisconnect?(signal: AbortSignal): Promise<void>;
  /** Releases what in-flight handlers used (a model), once the bus has drained. */
  dispose?(): Promise<void>;
}

/** What a service factory receives. */
export interface ServiceContext {
  bus: Bus;
  config: Config;
  log: Logger;
}

/** A service definition: its name and its factory. */
export interface ServiceDefinition {
  name: string;
  description: string;
  /** Instance id (a worker uses its worker id); default random. */
  instance?: (config: Config) => string | undefined;
  start(ctx: ServiceContext): Promise<ServiceHandle>;
}

/** A service that runs (in this process). */
export interface RunningService {
  /** The service's bus; its NATS connection is the runner's (and tests'), not the service's. */
  readonly bus: NatsBus;
  readonly handle: ServiceHandle;
  /** Stops taking work, drains the bus (letting in-flight work finish), then disposes. */
  stop(): Promise<void>;
}

/** How {@link launchService} runs a service. */
export interface LaunchEnv {
  config: Config;
  log: Logger;
  /**
   * Try the `NATS_URL` servers in their order (the first is preferred; the others, in order, when
   * it fails) instead of the client's shuffle: a test on a cluster gives each service the list
   * rotated, so that they prefer different nodes. Default false.
   */
  noRandomize?: boolean;
}

/**
 * Connects a service to NATS (every `NATS_URL` server, JetStream state with `ATLAS_JS_REPLICAS`
 * replicas), starts it and serves its health.
 */
export async function launchService(definition: ServiceDefinition, env: LaunchEnv): Promise<RunningService> {
  const { config, log } = env;
  const instance = definition.instance?.(config);
  const bus = await Bus.connect({
    servers: natsServers(config),
    prefix: config.ATLAS_NATS_PREFIX,
    service: { name: definition.name, version: ATLAS_VERSION, description: definition.description },
    ...(instance === undefined ? {} : { instance }),
    logger: log,
    ...(config.NATS_USER === undefined ? {} : { user: config.NATS_USER, pass: config.NATS_PASSWORD ?? "" }),
    replicas: config.ATLAS_JS_REPLICAS,
    noRandomize: env.noRandomize ?? false,
  });
  let handle: ServiceHandle;
  try {
    handle = await definition.start({ bus, config, log: log.child({ instance: bus.instance }) });
  } catch (err) {
    await bus.close({ graceMs: 0 });
    throw err;
  }
  bus.serveHealth(() => handle.health());
  let stopped: Promise<void> | undefined;
  return {
    bus,
    handle,
    stop: () => {
      stopped ??= (async () => {
        await handle.stop();
        const before = handle.beforeDisconnect;
        await bus.close({
          graceMs: config.ATLAS_SHUTDOWN_GRACE_MS,
          ...(before === undefined
            ? {}
            : { beforeDisconnect: () => before(AbortSignal.timeout(Math.max(1, config.ATLAS_SHUTDOWN_GRACE_MS))) }),
        });
        await handle.dispose?.();
      })();
      return stopped;
    },
  };
}

/** Runs one service until SIGTERM/SIGINT (or its supervisor goes away), then stops it; exits the process. */
export async function runService(definition: ServiceDefinition): Promise<void> {
  const config = loadConfigOrExit();
  const log = createLogger({ service: definition.name, level: config.ATLAS_LOG_LEVEL, format: config.ATLAS_LOG_FORMAT });
  let running: RunningService;
  try {
    running = await launchService(definition, { config, log });
  } catch (err) {
    log.fatal({ err, nats: natsServers(config) }, `Cannot start ${definition.name}`);
    log.flush?.();
    process.exit(1);
  }
  log.info({ instance: running.bus.instance, nats: running.bus.nc.getServer(), prefix: running.bus.prefix }, `${definition.name} is up`);
  process.send?.({ type: "ready" }); // the supervisor marks the child running

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, `${definition.name} is stopping`);
    const hard = setTimeout(() => {
      log.error("Shutdown took too long; exiting");
      process.exit(1);
    }, config.ATLAS_SHUTDOWN_GRACE_MS + 5000);
    hard.unref();
    try {
      await running.stop();
    } catch (err) {
      log.error({ err }, "Error while stopping");
    }
    log.info(`${definition.name} stopped`);
    log.flush?.();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  // Started by the supervisor with an IPC channel: if the supervisor dies, stop with it.
  if (process.send !== undefined) process.once("disconnect", () => void stop("supervisor-gone"));
}
