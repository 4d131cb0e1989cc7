#!/usr/bin/env node
/**
 * Compose's one-shot `nats-init` service (docker-compose.yml): gives every NATS user of the
 * generated configuration (deploy/nats/atlas.conf, `npm run nats-config`) a random password on
 * first start, keeps it on later starts, and renders the configuration nats-server runs with.
 *
 *   node scripts/nats-init.mjs --config deploy/nats/atlas.conf --out <dir> [--owner <uid>:<gid>]
 *
 * Under `<dir>` (each folder is a named volume in compose):
 *   server/nats.conf              atlas.conf with every `$ATLAS_NATS_PASSWORD_<USER>` replaced by
 *                                 that user's password (nats and nats-init only; mode 0600)
 *   <service>/<service>           the password of a service's user (api, metrics, …), mounted
 *                                 read-only into that service alone (`NATS_PASSWORD_FILE`)
 *   inference-worker/worker-<n>   the workers' pool, mounted into every worker
 *                                 (`ATLAS_WORKER_CREDENTIALS`; each claims one user)
 *
 * A password file that exists is kept (its user keeps its password); a missing one is created
 * (24 random bytes, base64url). nats.conf is rendered again on every run, so a regenerated
 * atlas.conf (a new permission, more workers) takes effect on the next `docker compose up`.
 * `--owner` makes the password files belong to the services' user (uid 1000, `node`, in the images).
 * Exits 1, writing nothing it has not finished, when atlas.conf names no user or a password
 * variable is left unreplaced: nats-server then does not start (fail closed).
 *
 * Plain JavaScript with no dependencies, so that it runs in the stock Node image.
 * See docs/adr/0015-worker-credentials.md.
 */
import { randomBytes } from "node:crypto";
import { chown, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

/** `user: "api"` followed by `password: $ATLAS_NATS_PASSWORD_API`, as `renderNatsAuthConfig` writes them. */
const USER_ENTRY = /user:\s*"([A-Za-z0-9_-]+)"\s*,?\s*password:\s*\$(ATLAS_NATS_PASSWORD_[A-Z0-9_]+)/g;
/** The workers' pool users; their files share one folder. */
const WORKER_USER = /^worker-[1-9][0-9]*$/;
const WORKER_FOLDER = "inference-worker";

/** The folder (volume) a user's password file lives in. */
export function folderOf(user) {
  return WORKER_USER.test(user) ? WORKER_FOLDER : user;
}

/** Writes `text` to `file` through a temporary file and a rename (never a half-written file). */
async function writeAtomic(file, text, mode, owner) {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, text, { mode });
  if (owner !== undefined) await chown(tmp, owner.uid, owner.gid);
  await rename(tmp, file);
}

/** The password in `file`, or undefined when it does not exist or is empty. */
async function existingPassword(file) {
  try {
    const text = (await readFile(file, "utf8")).trim();
    return text === "" ? undefined : text;
  } catch (err) {
    if (err?.code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * Does the work (see the module comment); returns the users, with `created` true for those that
 * got a new password in this run.
 */
export async function initNatsCredentials({ config, out, owner }) {
  const template = await readFile(config, "utf8");
  const users = [...template.matchAll(USER_ENTRY)].map((m) => ({ user: m[1], variable: m[2] }));
  if (users.length === 0) throw new Error(`${config} names no user with a $ATLAS_NATS_PASSWORD_<USER> password`);
  const result = [];
  const passwords = new Map();
  for (const { user, variable } of users) {
    const dir = join(out, folderOf(user));
    await mkdir(dir, { recursive: true });
    const file = join(dir, user);
    let password = await existingPassword(file);
    const created = password === undefined;
    if (password === undefined) {
      password = randomBytes(24).toString("base64url");
      await writeAtomic(file, `${password}\n`, 0o400, owner);
    }
    passwords.set(variable, password);
    result.push({ user, file, created });
  }
  const rendered = template.replace(/\$(ATLAS_NATS_PASSWORD_[A-Z0-9_]+)/g, (whole, variable) => {
    const password = passwords.get(variable);
    return password === undefined ? whole : JSON.stringify(password);
  });
  const left = /\$ATLAS_NATS_PASSWORD_[A-Z0-9_]+/.exec(rendered);
  if (left !== null) throw new Error(`${config}: ${left[0]} is not a user's password: no password to put there`);
  await mkdir(join(out, "server"), { recursive: true });
  await writeAtomic(join(out, "server", "nats.conf"), rendered, 0o600);
  return result;
}

async function main() {
  const { values } = parseArgs({ options: { config: { type: "string" }, out: { type: "string" }, owner: { type: "string" } } });
  if (values.config === undefined || values.out === undefined) {
    process.stderr.write("usage: node scripts/nats-init.mjs --config <atlas.conf> --out <dir> [--owner <uid>:<gid>]\n");
    return 2;
  }
  let owner;
  if (values.owner !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(values.owner);
    if (m === null) {
      process.stderr.write(`--owner must be <uid>:<gid> (got "${values.owner}")\n`);
      return 2;
    }
    owner = { uid: Number(m[1]), gid: Number(m[2]) };
  }
  try {
    const users = await initNatsCredentials({ config: values.config, out: values.out, owner });
    const created = users.filter((u) => u.created).length;
    process.stdout.write(`nats-init: ${users.length} NATS users, ${created} new password(s), ${users.length - created} kept\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`nats-init: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = await main();
