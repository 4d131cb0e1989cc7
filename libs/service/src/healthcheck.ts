/**
 * Container health check: `node --import tsx libs/service/src/healthcheck.ts <service-name>`.
 *
 * Connects to NATS with the service's own configuration (`NATS_URL`, `ATLAS_NATS_PREFIX`,
 * `NATS_USER`/`NATS_PASSWORD`), sends `$SRV.PING.<service-name>`, and exits 0 as soon as an
 * instance of that name in this cluster (its discovery metadata carries the same
 * `atlas_prefix`) answers; 1 when none answers within 2 s, the server cannot be reached, or the
 * configuration does not parse.
 *
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Bus, type NatsBus } from "@atlas/bus";
import { type Config, loadConfig, natsServers } from "@atlas/config";
import { ATLAS_VERSION, DiscoveryVerb, discoverySubject, PingResponse, SubjectToken } from "@atlas/contracts";

/** How long to wait for an answer, in ms. */
export const HEALTHCHECK_TIMEOUT_MS = 2000;

/** Options for {@link checkServiceHealth}. */
export interface HealthcheckOptions {
  /** How long to wait for an answer; default {@link HEALTHCHECK_TIMEOUT_MS}. */
  timeoutMs?: number;
}

/**
 * Pings the instances of `service` in the cluster of `config`; resolves true when one of them
 * answers in time, false otherwise (also when NATS cannot be reached).
 */
export async function checkServiceHealth(service: string, config: Config, options: HealthcheckOptions = {}): Promise<boolean> {
  const timeoutMs = options.timeoutMs ?? HEALTHCHECK_TIMEOUT_MS;
  let bus: NatsBus;
  try {
    bus = await Bus.connect({
      servers: natsServers(config),
      prefix: config.ATLAS_NATS_PREFIX,
      service: { name: "healthcheck", version: ATLAS_VERSION, description: "Container health check" },
      waitOnFirstConnect: false,
      discoverable: false,
      ...(config.NATS_USER === undefined ? {} : { user: config.NATS_USER, pass: config.NATS_PASSWORD ?? "" }),
    });
  } catch {
    return false;
  }
  try {
    return await new Promise<boolean>((resolve) => {
      const inbox = `_INBOX.${crypto.randomUUID().replaceAll("-", "")}`;
      const timer = setTimeout(() => {
        sub.unsubscribe();
        resolve(false);
      }, timeoutMs);
      const sub = bus.nc.subscribe(inbox, {
        callback: (err, msg) => {
          if (err !== null) return;
          let answer: unknown;
          try {
            answer = msg.json();
          } catch {
            return; // not JSON: not one of ours
          }
          const ping = PingResponse.safeParse(answer);
          if (ping.success && ping.data.name === service && ping.data.metadata?.atlas_prefix === config.ATLAS_NATS_PREFIX) {
            clearTimeout(timer);
            sub.unsubscribe();
            resolve(true);
          }
        },
      });
      bus.nc.publish(discoverySubject(DiscoveryVerb.ping, service), new Uint8Array(), { reply: inbox });
    });
  } finally {
    await bus.close({ graceMs: 0 }).catch(() => undefined);
  }
}

/** The command line: exit 0 when healthy, 1 otherwise, 2 on a usage error. */
async function main(argv: readonly string[]): Promise<number> {
  const service = argv[0];
  if (service === undefined || !SubjectToken.safeParse(service).success) {
    process.stderr.write("Usage: node --import tsx libs/service/src/healthcheck.ts <service-name>\n");
    return 2;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const ok = await checkServiceHealth(service, config);
  if (!ok)
    process.stderr.write(
      `No "${service}" instance with prefix "${config.ATLAS_NATS_PREFIX}" answered within ${HEALTHCHECK_TIMEOUT_MS} ms\n`,
    );
  return ok ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  // A hard stop in case connecting hangs (an unreachable host that does not refuse).
  setTimeout(() => process.exit(1), HEALTHCHECK_TIMEOUT_MS + 3000).unref();
  process.exit(await main(process.argv.slice(2)));
}
