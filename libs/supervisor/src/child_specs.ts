/**
 * What `npm start` runs: the children in start order (metrics, persistence, scheduler, the
 * inference workers — one model's `ATLAS_WORKERS`, or each `ATLAS_MODELS` entry's — and the api),
 * each with its script and environment, and the log format they get. Pure functions of the
 * configuration; `supervisor.ts` runs them.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Config } from "@atlas/config";
import { SERVICE_NAMES, ServiceName } from "@atlas/contracts";
import type { ChildSpec } from "./child.ts";
import { RUNTIME, type Runtime, serviceModule } from "./runtime.ts";

/** The repository root: where the children run and their scripts live. */
export const REPO_ROOT: string = fileURLToPath(new URL("../../../", import.meta.url));

/** One inference worker `npm start` runs: its id, and with `ATLAS_MODELS` its model. */
export interface WorkerPlan {
  id: string;
  /** The model id it serves (`ATLAS_MODEL_ID`); undefined in the one-model form (the worker decides). */
  model?: string;
  /** Its GGUF file (`ATLAS_MODEL`); undefined in the one-model form (inherited, or the demo model). */
  path?: string;
}

/**
 * The workers `npm start` runs. With `ATLAS_MODELS`, each entry's `workers` of that model, in
 * order, each with its path and id (`ATLAS_MODEL`, `ATLAS_MODEL_ID`); `ATLAS_MODEL`,
 * `ATLAS_MODEL_ID` and `ATLAS_WORKERS` are then ignored. Without it, `ATLAS_WORKERS` workers of the
 * one model. Ids are `worker-<n>`, numbered across all models; when `ATLAS_WORKER_ID` is set, one
 * worker gets it as is and several get `<id>-<n>`.
 */
export function workerPlans(config: Config): WorkerPlan[] {
  const models: { model?: string; path?: string }[] =
    config.ATLAS_MODELS === undefined
      ? Array.from({ length: config.ATLAS_WORKERS }, () => ({}))
      : config.ATLAS_MODELS.flatMap((m) => Array.from({ length: m.workers }, () => ({ model: m.id, path: m.path })));
  return models.map((m, i) => {
    const n = i + 1;
    const id =
      config.ATLAS_WORKER_ID === undefined
        ? `worker-${n}`
        : models.length === 1
          ? config.ATLAS_WORKER_ID
          : `${config.ATLAS_WORKER_ID}-${n}`;
    return { id, ...m };
  });
}

/** The single-model variables `ATLAS_MODELS` overrides that are set in `env` (`npm start` warns about them). */
export function ignoredModelVariables(config: Config, env: Readonly<NodeJS.ProcessEnv>): string[] {
  if (config.ATLAS_MODELS === undefined) return [];
  return ["ATLAS_MODEL", "ATLAS_MODEL_ID", "ATLAS_WORKERS"].filter((k) => (env[k] ?? "").trim() !== "");
}

/**
 * The children `npm start` runs: metrics, persistence, scheduler, the inference workers of
 * {@link workerPlans} (each with its `ATLAS_WORKER_ID`, and with `ATLAS_MODELS` its
 * `ATLAS_MODEL` and `ATLAS_MODEL_ID`), api. The scripts are the compiled
 * `services/<name>/dist/main.js` when the supervisor itself runs compiled, else the sources
 * `services/<name>/src/main.ts` (run through tsx).
 */
export function defaultChildSpecs(config: Config, rootDir: string = REPO_ROOT, runtime: Runtime = RUNTIME): ChildSpec[] {
  const specs: ChildSpec[] = [];
  for (const name of SERVICE_NAMES) {
    const script = serviceModule(rootDir, name, "main", runtime);
    if (name !== ServiceName.worker) {
      specs.push({ name, script });
      continue;
    }
    for (const w of workerPlans(config)) {
      const model: Record<string, string> =
        w.path === undefined || w.model === undefined ? {} : { ATLAS_MODEL: w.path, ATLAS_MODEL_ID: w.model };
      specs.push({ name, instance: w.id, script, env: { ATLAS_WORKER_ID: w.id, ...model } });
    }
  }
  return specs;
}

/** The log format children get: `pretty` on a terminal when the format is `auto`, else as configured. */
export function childLogFormat(format: Config["ATLAS_LOG_FORMAT"], stdoutIsTTY: boolean): "pretty" | "json" {
  if (format === "auto") return stdoutIsTTY ? "pretty" : "json";
  return format;
}
