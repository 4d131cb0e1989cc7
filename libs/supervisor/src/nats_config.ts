/**
 * `npm run nats-config [-- options]`: writes the nats-server authorization for compose, one
 * user per service, from `libs/contracts/src/service_permissions/<name>.ts`.
 *
 *   --prefix <p>       subject prefix (default `ATLAS_NATS_PREFIX` or `atlas`)
 *   --out <file>       where to write (default `deploy/nats/atlas.conf`; `-` for stdout)
 *   --env-file <file>  also add a random `ATLAS_NATS_PASSWORD_<SERVICE>` for every service that
 *                      has none there yet (e.g. `.env`, which compose reads); never overwrites
 *   --check            write nothing; exit 1 when the file differs from what would be generated
 *
 * @module
 */
import { existsSync } from "node:fs";
import { appendFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { SERVICE_NAMES } from "@atlas/contracts";
import { REPO_ROOT } from "./child_specs.ts";
import { composeNatsConfig, passwordVariable, randomPassword } from "./nats_auth.ts";

/** Where compose mounts the configuration from. */
export const DEFAULT_NATS_CONFIG = "deploy/nats/atlas.conf";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      prefix: { type: "string" },
      out: { type: "string" },
      "env-file": { type: "string" },
      check: { type: "boolean", default: false },
    },
  });
  const prefix = values.prefix ?? process.env.ATLAS_NATS_PREFIX ?? "atlas";
  const text = await composeNatsConfig(prefix);
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
    process.stderr.write(`Wrote ${out} (prefix "${prefix}", ${SERVICE_NAMES.length} users)\n`);
  }
  const envFile = values["env-file"];
  if (envFile !== undefined) {
    const existing = existsSync(envFile) ? await readFile(envFile, "utf8") : "";
    const have = new Set([...existing.matchAll(/^\s*([A-Z0-9_]+)\s*=/gm)].map((m) => m[1]));
    const add = SERVICE_NAMES.map(passwordVariable).filter((v) => !have.has(v));
    if (add.length > 0) {
      const lead = existing === "" || existing.endsWith("\n") ? "" : "\n";
      await appendFile(envFile, `${lead}${add.map((v) => `${v}=${randomPassword()}`).join("\n")}\n`, { mode: 0o600 });
    }
    process.stderr.write(`${envFile}: ${add.length} password(s) added, ${SERVICE_NAMES.length - add.length} kept\n`);
  }
  return 0;
}

process.exitCode = await main();
