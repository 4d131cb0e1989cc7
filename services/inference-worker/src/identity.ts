/**
 * The worker's NATS identity when it is started with the pool's credentials
 * (`ATLAS_WORKER_CREDENTIALS`: a folder of `worker-<n>` password files, which compose's
 * `nats-init` writes). Every replica of `docker compose up --scale inference-worker=N` gets the
 * same folder, so each claims one user for itself: it connects as `worker-<n>` and creates that
 * key in the claims bucket (`workerClaimsBucket`; each user may write only its own key), which
 * succeeds for one process only; a replica whose create fails tries the next user. The claim is
 * rewritten every {@link CLAIM_REFRESH_MS} and expires {@link CLAIM_TTL_MS} after the last write,
 * so the user of a worker that died is free again after that. The claimed user's name is the
 * worker's id (docs/adr/0015-worker-credentials.md).
 *
 * @module
 */
import { readdir, readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { Bus, type KV, type NatsBus } from "@atlas/bus";
import { type Config, natsServers } from "@atlas/config";
import {
  ATLAS_VERSION,
  isWorkerCredential,
  ServiceName,
  WORKER_CREDENTIAL_PATTERN,
  WorkerClaim,
  WorkerPasswordFile,
  workerClaimsBucket,
} from "@atlas/contracts";
import type { Logger } from "@atlas/log";

/** How long a claim outlives its last refresh, in ms. */
export const CLAIM_TTL_MS = 15_000;
/** How often a running worker rewrites its claim, in ms. */
export const CLAIM_REFRESH_MS = 5_000;

/** A pool user this process holds. */
export interface ClaimedCredential {
  readonly user: string;
  readonly password: string;
  /** Stops refreshing the claim and deletes it (the user is free at once). */
  release(): Promise<void>;
}

/** Options for {@link claimWorkerCredential}. */
export interface ClaimOptions {
  /** Claim only this user (`ATLAS_WORKER_ID`); default every user of the folder, in order. */
  only?: string;
  ttlMs?: number;
  refreshMs?: number;
}

/** The pool users of `dir`, by number (`worker-1`, `worker-2`, … `worker-10`). */
export async function poolUsers(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => isWorkerCredential(n));
  const num = (n: string) => Number(WORKER_CREDENTIAL_PATTERN.exec(n)?.[1] ?? 0);
  return names.sort((a, b) => num(a) - num(b));
}

/** Connects as `user` and creates its claim; undefined when another process holds it. */
async function tryClaim(
  config: Config,
  log: Logger,
  user: string,
  password: string,
  ttlMs: number,
): Promise<{ bus: NatsBus; kv: KV } | undefined> {
  const bus = await Bus.connect({
    servers: natsServers(config),
    prefix: config.ATLAS_NATS_PREFIX,
    service: { name: ServiceName.worker, version: ATLAS_VERSION, description: "worker credential claim" },
    instance: user,
    discoverable: false,
    logger: log,
    user,
    pass: password,
    replicas: config.ATLAS_JS_REPLICAS,
  });
  try {
    const kv = await bus.jetstream.kv(workerClaimsBucket(config.ATLAS_NATS_PREFIX), { ttl: ttlMs, history: 1 });
    const claim: WorkerClaim = { host: hostname(), pid: process.pid, claimed_at: new Date().toISOString() };
    const held = await kv.create(user, JSON.stringify(WorkerClaim.parse(claim))).then(
      () => true,
      (err: unknown) => {
        log.debug({ err, user }, `Worker credential ${user} is claimed by another process`);
        return false;
      },
    );
    if (held) return { bus, kv };
  } catch (err) {
    await bus.close({ graceMs: 0 }).catch(() => undefined);
    throw err;
  }
  await bus.close({ graceMs: 0 }).catch(() => undefined);
  return undefined;
}

/**
 * Claims a free user of the pool in `config.ATLAS_WORKER_CREDENTIALS` (see the module comment);
 * throws when every one is held (the process exits and its restart policy tries again).
 */
export async function claimWorkerCredential(config: Config, log: Logger, options: ClaimOptions = {}): Promise<ClaimedCredential> {
  const dir = config.ATLAS_WORKER_CREDENTIALS;
  if (dir === undefined) throw new Error("ATLAS_WORKER_CREDENTIALS is not set: there is no credential pool to claim from");
  const ttlMs = options.ttlMs ?? CLAIM_TTL_MS;
  if (options.only !== undefined && !isWorkerCredential(options.only)) {
    throw new Error(`ATLAS_WORKER_ID "${options.only}" is not a user of the worker pool (worker-<n>): unset it to claim any free one`);
  }
  const users = options.only === undefined ? await poolUsers(dir) : [options.only];
  if (users.length === 0) throw new Error(`${dir} holds no worker credentials (files worker-<n>)`);
  for (const user of users) {
    const text = WorkerPasswordFile.safeParse(await readFile(join(dir, user), "utf8"));
    if (!text.success) throw new Error(`The password file ${join(dir, user)} ${text.error.issues[0]?.message ?? "is not valid"}`);
    const held = await tryClaim(config, log, user, text.data, ttlMs);
    if (held === undefined) continue;
    const { bus, kv } = held;
    const value = JSON.stringify(WorkerClaim.parse({ host: hostname(), pid: process.pid, claimed_at: new Date().toISOString() }));
    const timer = setInterval(() => {
      kv.put(user, value).catch((err: unknown) => log.warn({ err, user }, `Cannot refresh the claim on worker credential ${user}`));
    }, options.refreshMs ?? CLAIM_REFRESH_MS);
    timer.unref();
    log.info({ user, of: users.length }, `Claimed worker credential ${user}`);
    let released: Promise<void> | undefined;
    return {
      user,
      password: text.data,
      release: () => {
        released ??= (async () => {
          clearInterval(timer);
          await kv.delete(user).catch((err: unknown) => log.warn({ err, user }, `Cannot release worker credential ${user}`));
          await bus.close({ graceMs: 0 }).catch(() => undefined);
        })();
        return released;
      },
    };
  }
  throw new Error(`Every worker credential in ${dir} is claimed (${users.length}): raise ATLAS_MAX_WORKERS or run fewer workers`);
}
