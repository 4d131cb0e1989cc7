/**
 * `npm run nats-config [-- options]`: writes the nats-server authorization for compose, one
 * user per service from `libs/contracts/src/service_permissions/<name>.ts`, and the workers'
 * pool `worker-1`…`worker-<n>` (docs/adr/0015-worker-credentials.md). Compose's `nats-init`
 * (scripts/nats-init.mjs) fills in the passwords; nothing else needs to run before `docker compose up`.
 *
 *   --prefix <p>       subject prefix (default `ATLAS_NATS_PREFIX` or `atlas`)
 *   --max-workers <n>  users in the worker pool (default `ATLAS_MAX_WORKERS` or 16)
 *   --out <file>       where to write (default `deploy/nats/atlas.conf`; `-` for stdout)
 *   --env-file <file>  also add a random `ATLAS_NATS_PASSWORD_<USER>` for every user that has
 *                      none there yet (to run nats-server with its passwords in its environment,
 *                      outside compose); never overwrites
 *   --check            write nothing; exit 1 when the file differs from what would be generated
 *
 * @module
 */
import { existsSync } from "node:fs";
import { appendFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { configSchema } from "@atlas/config";
import { REPO_ROOT } from "./child_specs.ts";
import { composeNatsConfig, deploymentPermissions, passwordVariable, randomPassword } from "./nats_auth.ts";

/** Where compose mounts the configuration from. */
export const DEFAULT_NATS_CONFIG = "deploy/nats/atlas.conf";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      prefix: { type: "string" },
      "max-workers": { type: "string" },
      out: { type: "string" },
      "env-file": { type: "string" },
      check: { type: "boolean", default: false },
    },
  });
  const prefix = values.prefix ?? process.env.ATLAS_NATS_PREFIX ?? "atlas";
  const maxWorkers = configSchema.shape.ATLAS_MAX_WORKERS.parse(values["max-workers"] ?? process.env.ATLAS_MAX_WORKERS);
  const text = await composeNatsConfig(prefix, maxWorkers);
  const users = deploymentPermissions(prefix, maxWorkers).map((p) => p.service);
  const out = values.out ?? resolve(REPO_ROOT, DEFAULT_NATS_CONFIG);
  if (values.check) {
    const current = existsSync(out) ? await readFile(out, "utf8") : "";
    if (current !== text) {
      process.stderr.write(`${out} is not what libs/contracts/src/service_permissions/ generates: run npm run nats-config\n`);
      return 1;
    }
    return 0;
  }
  if (out === "-") process.stdout.write(text);
  else {
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, text);
    process.stderr.write(`Wrote ${out} (prefix "${prefix}", ${users.length} users)\n`);
  }
  const envFile = values["env-file"];
  if (envFile !== undefined) {
    const existing = existsSync(envFile) ? await readFile(envFile, "utf8") : "";
    const have = new Set([...existing.matchAll(/^\s*([A-Z0-9_]+)\s*=/gm)].map((m) => m[1]));
    const add = users.map(passwordVariable).filter((v) => !have.has(v));
    if (add.length > 0) {
      const lead = existing === "" || existing.endsWith("\n") ? "" : "\n";
      await appendFile(envFile, `${lead}${add.map((v) => `${v}=${randomPassword()}`).join("\n")}\n`, { mode: 0o600 });
    }
    process.stderr.write(`${envFile}: ${add.length} password(s) added, ${users.length - add.length} kept\n`);
  }
  return 0;
}

process.exitCode = await main();
