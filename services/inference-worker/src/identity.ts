/**
 * The worker's NATS identity when it is started with the pool's credentials
 * (`ATLAS_WORKER_CREDENTIALS`: a folder of `worker-<n>` password files, which compose's
 * `nats-init` writes). Every replica of `docker compose up --scale inference-worker=N` gets the
 * same folder, so each claims one user for itself: it connects as `worker-<n>` and creates that
 * key in the claims bucket (`workerClaimsBucket`; each user may write only its own key), which
 * succeeds for one process only; a replica whose create meets a claim tries the next user. The
 * claim is rewritten every {@link CLAIM_REFRESH_MS}, each time only if it is still the revision
 * this process wrote (`update`), and expires {@link CLAIM_TTL_MS} after the last write. A
 * process whose claim lapsed (it could not refresh for a while) and was taken by another, or
 * expired, finds out at its next refresh and exits: two processes never keep running as one
 * user. A clean stop releases the claim (main.ts), so the user is free at once; the user of a
 * worker that died is free after the TTL. The claimed user's name is the worker's id
 * (docs/adr/0015-worker-credentials.md).
 *
 * @module
 */
import { readdir, readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { Bus, isRevisionConflict, type KV, type NatsBus } from "@atlas/bus";
import { type Config, natsServers } from "@atlas/config";
import {
  ATLAS_VERSION,
  isWorkerCredential,
  KEY_WRITER_STREAM_LOCKS,
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
  /** Stops refreshing the claim and deletes it if it is still this process's (the user is free at once). */
  release(): Promise<void>;
}

/** Options for {@link claimWorkerCredential}. */
export interface ClaimOptions {
  /** Claim only this user (`ATLAS_WORKER_ID`); default every user of the folder, in order. */
  only?: string;
  ttlMs?: number;
  refreshMs?: number;
  /**
   * Called (once, after a fatal log line) when a refresh finds the claim gone or rewritten by
   * another process; default: exit the process with status 1 (its restart policy claims again).
   */
  onLost?: (err: unknown) => void;
}

/** The pool users of `dir`, by number (`worker-1`, `worker-2`, … `worker-10`). */
export async function poolUsers(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => isWorkerCredential(n));
  const num = (n: string) => Number(WORKER_CREDENTIAL_PATTERN.exec(n)?.[1] ?? 0);
  return names.sort((a, b) => num(a) - num(b));
}

/**
 * The claims bucket, created when missing as a KV bucket whose stream refuses purges, rollups and
 * message deletes: a worker's only way to change it is a put or a delete marker on its own key
 * (its permissions name that key alone), so it cannot wipe another worker's claim. A bucket made
 * by an older version (with rollups allowed) is used as it is.
 */
async function claimsBucket(bus: NatsBus, prefix: string, ttlMs: number): Promise<KV> {
  const { kv } = await bus.jetstream.kvWith(workerClaimsBucket(prefix), {
    history: 1,
    ttlMs,
    description: "ATLAS worker credential claims",
    settings: KEY_WRITER_STREAM_LOCKS,
  });
  return kv;
}

/**
 * Connects as `user` and creates its claim: its bucket and the claim's revision, or undefined
 * when another process holds it. Any other failure (JetStream down, a refusal) throws.
 */
async function tryClaim(
  config: Config,
  log: Logger,
  user: string,
  password: string,
  ttlMs: number,
  value: string,
): Promise<{ bus: NatsBus; kv: KV; revision: number } | undefined> {
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
    const kv = await claimsBucket(bus, config.ATLAS_NATS_PREFIX, ttlMs);
    const revision = await kv.create(user, value).catch((err: unknown) => {
      if (isRevisionConflict(err)) return undefined; // the key exists: held by another process
      throw err;
    });
    if (revision !== undefined) return { bus, kv, revision };
    log.debug({ user }, `Worker credential ${user} is claimed by another process`);
  } catch (err) {
    await bus.close({ graceMs: 0 }).catch(() => undefined);
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`Cannot claim worker credential ${user} (JetStream, bucket ${workerClaimsBucket(config.ATLAS_NATS_PREFIX)}): ${why}`, {
      cause: err,
    });
  }
  await bus.close({ graceMs: 0 }).catch(() => undefined);
  return undefined;
}

/** The default {@link ClaimOptions.onLost}: exit, so that the restart policy starts a process that claims again. */
function exitOnLost(log: Logger): () => void {
  return () => {
    log.flush?.();
    process.exit(1);
  };
}

/**
 * Claims a free user of the pool in `config.ATLAS_WORKER_CREDENTIALS` (see the module comment);
 * throws when every one is held (the process exits and its restart policy tries again), or when
 * a claim cannot be made at all (the error says why).
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
  const value = JSON.stringify(WorkerClaim.parse({ host: hostname(), pid: process.pid, claimed_at: new Date().toISOString() }));
  for (const user of users) {
    const text = WorkerPasswordFile.safeParse(await readFile(join(dir, user), "utf8"));
    if (!text.success) throw new Error(`The password file ${join(dir, user)} ${text.error.issues[0]?.message ?? "is not valid"}`);
    const held = await tryClaim(config, log, user, text.data, ttlMs, value);
    if (held === undefined) continue;
    log.info({ user, of: users.length }, `Claimed worker credential ${user}`);
    return keepClaim(held, user, text.data, value, log, options);
  }
  throw new Error(`Every worker credential in ${dir} is claimed (${users.length}): raise ATLAS_MAX_WORKERS or run fewer workers`);
}

/** Refreshes a claim made by {@link tryClaim} until it is released or lost. */
function keepClaim(
  held: { bus: NatsBus; kv: KV; revision: number },
  user: string,
  password: string,
  value: string,
  log: Logger,
  options: ClaimOptions,
): ClaimedCredential {
  const { bus, kv } = held;
  let revision = held.revision;
  let lost = false;
  let refreshing: Promise<void> | undefined;
  const onLost = options.onLost ?? exitOnLost(log);
  const refresh = async () => {
    try {
      revision = await kv.update(user, value, revision);
    } catch (err) {
      if (!isRevisionConflict(err)) {
        log.warn({ err, user }, `Cannot refresh the claim on worker credential ${user}; trying again`);
        return;
      }
      lost = true;
      clearInterval(timer);
      log.fatal(
        { err, user },
        `The claim on worker credential ${user} lapsed and is gone or held by another process: stopping, so that no two processes run as ${user}`,
      );
      onLost(err);
    }
  };
  const timer = setInterval(() => {
    refreshing ??= refresh().finally(() => {
      refreshing = undefined;
    });
  }, options.refreshMs ?? CLAIM_REFRESH_MS);
  timer.unref();
  let released: Promise<void> | undefined;
  return {
    user,
    password,
    release: () => {
      released ??= (async () => {
        clearInterval(timer);
        await refreshing;
        // Only this process's revision: a claim that lapsed and was taken since is not ours to delete.
        if (!lost) {
          await kv
            .delete(user, { previousSeq: revision })
            .catch((err: unknown) => log.warn({ err, user }, `Cannot release worker credential ${user}`));
        }
        await bus.close({ graceMs: 0 }).catch(() => undefined);
      })();
      return released;
    },
  };
}
