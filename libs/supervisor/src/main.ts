/**
 * `npm start` (compiled, after `npm run build`) and `npm run dev` (TypeScript sources through
 * tsx): runs the supervisor until SIGINT or SIGTERM. The first signal stops every child
 * gracefully and then NATS; another one, a second or more later, kills everything at once.
 *
 * @module
 */
import { resolve } from "node:path";
import { loadConfigOrExit } from "@atlas/config";
import { ensureDemoModel } from "@atlas/gguf";
import { createLogger } from "@atlas/log";
import { NatsServerNotFoundError } from "./nats.ts";
import { BuildMissingError } from "./runtime.ts";
import { SUPERVISOR_SERVICE, type Supervisor, startSupervisor } from "./supervisor.ts";

const config = loadConfigOrExit();
const log = createLogger({ service: SUPERVISOR_SERVICE, level: config.ATLAS_LOG_LEVEL, format: config.ATLAS_LOG_FORMAT });

/** A repeat within this time is the same stop request (npm forwards the terminal's SIGINT too). */
const REPEAT_WINDOW_MS = 1000;

let supervisor: Supervisor | undefined;
let signals = 0;
let firstSignalAt = 0;

function onSignal(signal: NodeJS.Signals): void {
  signals += 1;
  if (signals === 1) {
    firstSignalAt = Date.now();
    log.info({ signal }, "Stopping (send the signal again to kill everything at once)");
    void supervisor?.stop();
    return;
  }
  if (Date.now() - firstSignalAt < REPEAT_WINDOW_MS) {
    log.debug({ signal }, "Ignoring a repeated signal; already stopping");
    return;
  }
  log.warn({ signal }, "Killing every child at once");
  void (supervisor?.kill() ?? Promise.resolve()).then(() => exit(130));
}
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// Last resort (an unexpected crash of the supervisor itself): leave no process behind.
process.on("exit", () => void supervisor?.kill());

/** Flushes the log (bounded), then exits. */
async function exit(code: number): Promise<never> {
  await new Promise<void>((resolve) => {
    setTimeout(resolve, 500);
    log.flush(() => resolve());
  });
  process.exit(code);
}

try {
  supervisor = await startSupervisor({
    config,
    log,
    // Generate the demo model once, before any worker, so several workers don't race for it.
    beforeWorkers: async ({ signal }): Promise<Record<string, string>> => {
      // Every ATLAS_MODELS worker gets its own model path; the demo model is for the one-model form.
      if (config.ATLAS_MODEL !== undefined || config.ATLAS_MODELS !== undefined) return {};
      const model = await ensureDemoModel(resolve(config.ATLAS_DATA_DIR, "models"), { preset: "tiny", signal });
      log.warn(
        { model },
        "No ATLAS_MODEL set: serving a generated random-weight DEMO model (it answers nonsense, but runs the real engine). Set ATLAS_MODEL to a GGUF file to serve a real model.",
      );
      return { ATLAS_MODEL: model };
    },
  });
} catch (err) {
  if (err instanceof NatsServerNotFoundError || err instanceof BuildMissingError) {
    process.stderr.write(`${err.message}\n`);
    await exit(1);
  }
  log.fatal({ err }, "Cannot start the supervisor");
  await exit(1);
}
if (signals > 0) void supervisor?.stop();
await exit(await (supervisor as Supervisor).done);
