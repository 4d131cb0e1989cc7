/**
 * `@atlas/service`: the life of one service process — load the configuration, log, connect to
 * NATS, start the service, answer health, and drain on SIGTERM or Ctrl-C. Every service's
 * `main.ts` is one call to {@link runService}.
 *
 * @module
 */
import { Bus, type HealthStatus } from "@atlas/bus";
import { type Config, loadConfigOrExit, natsServers } from "@atlas/config";
import { ATLAS_VERSION } from "@atlas/contracts";
import { createLogger, type Logger } from "@atlas/log";

/** What a started service hands back to its runner. */
export interface ServiceHandle {
  /** This instance's health, for the health subject. */
  health(): HealthStatus | Promise<HealthStatus>;
  /** Stops taking work and releases resources; the bus drains after it. */
  stop(): Promise<void>;
}

/** What a service factory receives. */
export interface ServiceContext {
  bus: Bus;
  config: Config;
  log: Logger;
}

/** Options for {@link runService}. */
export interface RunServiceOptions {
  name: string;
  description: string;
  /** Instance id (a worker uses its worker id); default random. */
  instance?: (config: Config) => string | undefined;
  start(ctx: ServiceContext): Promise<ServiceHandle>;
}

/** Runs one service until SIGTERM/SIGINT, then stops it and drains; exits the process. */
export async function runService(options: RunServiceOptions): Promise<void> {
  const config = loadConfigOrExit();
  const log = createLogger({ service: options.name, level: config.ATLAS_LOG_LEVEL, format: config.ATLAS_LOG_FORMAT });
  const servers = natsServers(config);
  const instance = options.instance?.(config);
  let bus: Bus;
  try {
    bus = await Bus.connect({
      servers,
      prefix: config.ATLAS_NATS_PREFIX,
      service: { name: options.name, version: ATLAS_VERSION, description: options.description },
      ...(instance === undefined ? {} : { instance }),
      logger: log,
      ...(config.NATS_USER === undefined ? {} : { user: config.NATS_USER, pass: config.NATS_PASSWORD ?? "" }),
    });
  } catch (err) {
    log.fatal({ err, servers }, `Cannot connect to NATS at ${servers.join(", ")}`);
    process.exit(1);
  }
  const handle = await options.start({ bus, config, log: log.child({ instance: bus.instance }) }).catch((err: unknown) => {
    log.fatal({ err }, `Cannot start ${options.name}`);
    return bus.close({ graceMs: 0 }).then(() => process.exit(1));
  });
  bus.serveHealth(() => handle.health());
  log.info({ instance: bus.instance, nats: bus.nc.getServer(), prefix: bus.prefix }, `${options.name} is up`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, `${options.name} is stopping`);
    const hard = setTimeout(() => {
      log.error("Shutdown took too long; exiting");
      process.exit(1);
    }, config.ATLAS_SHUTDOWN_GRACE_MS + 5000);
    hard.unref();
    try {
      await handle.stop();
      await bus.close({ graceMs: config.ATLAS_SHUTDOWN_GRACE_MS });
    } catch (err) {
      log.error({ err }, "Error while stopping");
    }
    log.info(`${options.name} stopped`);
    log.flush?.();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  // Started by the supervisor with an IPC channel: if the supervisor dies, stop with it.
  if (process.send !== undefined) process.once("disconnect", () => void stop("supervisor-gone"));
}
