/**
 * A stand-in service for the supervisor's tests: it writes its environment to
 * `$FIXTURE_OUT_DIR/<name>.json`, says it is ready over IPC, and runs until SIGTERM or until its
 * IPC channel closes. `FIXTURE_EXIT_CODE` makes it exit with that code after
 * `FIXTURE_EXIT_AFTER_MS` (default 100 ms); `FIXTURE_IGNORE_SIGTERM=1` makes it ignore SIGTERM.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const env = process.env;
const name = env.FIXTURE_NAME ?? "fixture";
if (env.FIXTURE_OUT_DIR !== undefined) {
  const seen = {
    pid: process.pid,
    NATS_URL: env.NATS_URL,
    ATLAS_WORKER_ID: env.ATLAS_WORKER_ID,
    ATLAS_LOG_FORMAT: env.ATLAS_LOG_FORMAT,
    ATLAS_DATA_DIR: env.ATLAS_DATA_DIR,
    FIXTURE_EXTRA: env.FIXTURE_EXTRA,
  };
  writeFileSync(join(env.FIXTURE_OUT_DIR, `${env.ATLAS_WORKER_ID ?? name}.json`), JSON.stringify(seen));
}
if (env.FIXTURE_IGNORE_SIGTERM === "1") process.on("SIGTERM", () => undefined);
else process.on("SIGTERM", () => process.exit(0));
process.on("disconnect", () => process.exit(0));
process.send?.({ type: "ready" });
if (env.FIXTURE_EXIT_CODE !== undefined) {
  setTimeout(() => process.exit(Number(env.FIXTURE_EXIT_CODE)), Number(env.FIXTURE_EXIT_AFTER_MS ?? 100));
}
setInterval(() => undefined, 60_000);
