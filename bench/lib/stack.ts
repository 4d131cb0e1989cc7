/**
 * Starts the whole ATLAS system as real processes, the way the supervisor of `npm start` runs
 * it (one process per service, an IPC channel so a child stops when the benchmark goes away),
 * around a dedicated `nats-server` on an ephemeral loopback port (no users: any client may
 * connect), with a unique `ATLAS_DATA_DIR` and subject prefix in a temp folder.
 *
 * Two runtimes, as the supervisor has them: `tsx` runs the TypeScript sources through the loader
 * (`node --conditions=development --import tsx services/<name>/src/main.ts`, what `npm run dev`
 * runs); `compiled` runs the JavaScript that `npm run build` emits
 * (`node services/<name>/dist/main.js`, what `npm start` runs; see {@link compiledEntry}).
 *
 * @module
 */
import type { ChildProcess } from "node:child_process";
import { existsSync, openSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { serviceV8Args } from "@atlas/supervisor";
import { freePort, type NatsServer, startNatsServer } from "@atlas/testing";
import type { BenchContext } from "./context.ts";
import { exited, spawnTracked, stopChild, whenExited } from "./proc.ts";

/** The repository root. */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** One sample of the api's heap, sent by `bench/probe/heap.ts` over the IPC channel. */
export interface HeapSample {
  /** `sample` every second; `major` right after a major GC; `forced` after the probe's own `gc()`. */
  kind: "sample" | "major" | "forced";
  t: number;
  heapUsed: number;
  heapTotal: number;
  rss: number;
  external: number;
}

/** How the services run: TypeScript through the tsx loader, or the compiled JavaScript. */
export type Runtime = "tsx" | "compiled";

/**
 * Node options that run TypeScript sources, as `npm run dev` and the supervisor's tsx runtime
 * use them: tsx, and workspace packages resolved to their sources (`development` condition), so
 * a stale `dist/` is never loaded.
 */
export const TSX_NODE_ARGS: readonly string[] = ["--conditions=development", "--import", "tsx"];

/** Where `npm run build` puts a service's compiled entry point. */
export function compiledEntry(name: string): string {
  return resolve(REPO_ROOT, "services", name, "dist", "main.js");
}

/** The compiled entry points that are missing (empty when `runtime: "compiled"` can run). */
export function missingCompiledEntries(): string[] {
  return SERVICE_ORDER.map((name) => compiledEntry(name)).filter((f) => !existsSync(f));
}

/**
 * Sources newer than their compiled output (`<pkg>/src/x.ts` vs `<pkg>/dist/x.js`, libs and
 * services with a `dist/`): a compiled stack then runs older code than the sources. Files the
 * package's build leaves out by name (`exclude` in its `tsconfig.build.json`, e.g. a benchmark
 * script) are not compiled, so never stale.
 */
export function staleCompiledSources(): string[] {
  const stale: string[] = [];
  let excluded = new Set<string>();
  const walk = (src: string, dist: string) => {
    for (const e of readdirSync(src, { withFileTypes: true })) {
      const from = join(src, e.name);
      if (e.isDirectory()) {
        if (e.name !== "testdata") walk(from, join(dist, e.name));
      } else if (/\.ts$/.test(e.name) && !/\.(test|d)\.ts$/.test(e.name) && !excluded.has(from)) {
        const out = join(dist, e.name.replace(/\.ts$/, ".js"));
        if (!existsSync(out) || statSync(out).mtimeMs < statSync(from).mtimeMs) stale.push(from.slice(REPO_ROOT.length));
      }
    }
  };
  for (const group of ["libs", "services"]) {
    for (const name of readdirSync(join(REPO_ROOT, group))) {
      const pkg = join(REPO_ROOT, group, name);
      if (!existsSync(join(pkg, "dist")) || !existsSync(join(pkg, "src"))) continue;
      excluded = buildExcludes(pkg);
      walk(join(pkg, "src"), join(pkg, "dist"));
    }
  }
  return stale;
}

/** The files a package's `tsconfig.build.json` excludes by exact path (globs are left alone). */
function buildExcludes(pkg: string): Set<string> {
  const file = join(pkg, "tsconfig.build.json");
  if (!existsSync(file)) return new Set();
  const { exclude } = JSON.parse(readFileSync(file, "utf8")) as { exclude?: string[] };
  return new Set((exclude ?? []).filter((p) => !p.includes("*")).map((p) => join(pkg, p)));
}

/** Options for {@link startStack}. */
export interface StackOptions {
  /** A label for logs and results. */
  label: string;
  /** Model file and the id clients send. */
  modelPath: string;
  modelId: string;
  workers: number;
  slots: number;
  ctxSize: number;
  threads: number;
  /** The run's temp folder; this stack gets a subfolder. */
  tmpDir: string;
  /** Extra environment for every service; `undefined` removes a variable the benchmark's own environment has. */
  env?: Record<string, string | undefined>;
  /** Load `bench/probe/probe.ts` into these services (labels: `api`, `scheduler`, `worker-1`…) so they can be CPU-profiled. */
  probe?: string[];
  /** Report the api's heap (the probe is loaded into the api); with `gcEveryMs`, run it with `--expose-gc` and force a GC that often. */
  heapProbe?: { gcEveryMs?: number };
  /** How long to wait for the whole stack; default 120 s. */
  startTimeoutMs?: number;
  /** Default `tsx`. `compiled` needs `npm run build` first, and runs no probe (it is TypeScript). */
  runtime?: Runtime;
}

/** A service process of a running stack. */
export interface StackProcess {
  name: string;
  /** `api`, `scheduler`, `worker-1`… */
  label: string;
  pid: number;
  child: ChildProcess;
  /** Spawn → its `ready` message over IPC, ms (services start one after the other). */
  startMs: number;
}

/** A running stack. */
export interface Stack {
  readonly label: string;
  readonly baseUrl: string;
  readonly natsUrl: string;
  readonly prefix: string;
  readonly modelId: string;
  readonly nats: NatsServer;
  readonly processes: StackProcess[];
  readonly heapSamples: HeapSample[];
  readonly logDir: string;
  readonly runtime: Runtime;
  /** First spawn → the api serves a completion on every worker, ms. */
  readonly startMs: number;
  /** Pids by label, `nats-server` included. */
  pids(): Record<string, number>;
  /** Starts the CPU profiler in the probed services. */
  startProfile(intervalUs?: number): Promise<void>;
  /** Stops it and writes `<dir>/<label>.cpuprofile` per probed service; resolves with the files by label. */
  stopProfile(dir: string): Promise<Record<string, string>>;
  /** Stops the api first, then the rest in reverse start order, then NATS. */
  stop(): Promise<void>;
}

const SERVICE_ORDER = ["metrics", "persistence", "scheduler", "inference-worker", "api"] as const;

export { freePort };

function waitReady(child: ChildProcess, label: string, logFile: string, timeoutMs: number): Promise<void> {
  return new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${label} did not report ready within ${timeoutMs} ms (log: ${logFile})`));
    }, timeoutMs);
    const onMessage = (msg: unknown) => {
      if (typeof msg === "object" && msg !== null && (msg as { type?: unknown }).type === "ready") {
        cleanup();
        resolveReady();
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${label} exited during start (code ${code}, signal ${signal}); see ${logFile}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/** Starts NATS and every service; resolves once the api serves a completion on every worker. */
export async function startStack(options: StackOptions): Promise<Stack> {
  const runtime = options.runtime ?? "tsx";
  if (runtime === "compiled") {
    if ((options.probe ?? []).length > 0 || options.heapProbe !== undefined) throw new Error("the bench probe needs the tsx runtime");
    const missing = missingCompiledEntries();
    if (missing.length > 0) throw new Error(`no compiled build (run npm run build first): missing ${missing.join(", ")}`);
  }
  const dir = join(options.tmpDir, options.label);
  const logDir = join(dir, "logs");
  await mkdir(logDir, { recursive: true });
  const nats = await startNatsServer({ storeDir: join(dir, "nats") });
  const port = await freePort();
  const prefix = `bench${crypto.randomUUID().slice(0, 6)}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NATS_URL: nats.url,
    ATLAS_NATS_PREFIX: prefix,
    ATLAS_DATA_DIR: join(dir, "data"),
    ATLAS_MEMORY_PATH: join(dir, "data", "memory"),
    ATLAS_MODEL: options.modelPath,
    ATLAS_MODEL_ID: options.modelId,
    ATLAS_SLOTS: String(options.slots),
    ATLAS_CTX_SIZE: String(options.ctxSize),
    ATLAS_THREADS: String(options.threads),
    ATLAS_WORKERS: String(options.workers),
    HOST: "127.0.0.1",
    PORT: String(port),
    ATLAS_LOG_FORMAT: "json",
    ...options.env,
  };
  // The benchmark's own flags must not leak into the services.
  delete env.NODE_OPTIONS;
  for (const [k, v] of Object.entries(options.env ?? {})) if (v === undefined) delete env[k];
  const processes: StackProcess[] = [];
  const heapSamples: HeapSample[] = [];
  const timeoutMs = options.startTimeoutMs ?? 120_000;
  const probeLabels = new Set(options.probe ?? []);

  const stop = async (): Promise<void> => {
    const api = processes.filter((p) => p.name === "api");
    const rest = processes.filter((p) => p.name !== "api").reverse();
    await Promise.all(api.map((p) => stopChild(p.child, "SIGTERM", 15_000)));
    await Promise.all(rest.map((p) => stopChild(p.child, "SIGTERM", 10_000)));
    await nats.stop({ keepStore: false });
  };
  const probed = () => processes.filter((p) => probeLabels.has(p.label) && !exited(p.child));
  const ask = (p: StackProcess, message: Record<string, unknown>, answer: string) =>
    new Promise<unknown>((resolveAnswer, reject) => {
      const timer = setTimeout(() => reject(new Error(`${p.label} did not answer ${answer}`)), 30_000);
      const onMessage = (msg: unknown) => {
        const type = (msg as { type?: unknown } | null)?.type;
        if (type === answer || type === "bench-profile-error") {
          clearTimeout(timer);
          p.child.off("message", onMessage);
          if (type === answer) resolveAnswer(msg);
          else reject(new Error(`${p.label}: ${String((msg as { message?: unknown }).message)}`));
        }
      };
      p.child.on("message", onMessage);
      p.child.send(message);
    });
  const startProfile = async (intervalUs = 1000) => {
    await Promise.all(probed().map((p) => ask(p, { type: "bench-profile", action: "start", intervalUs }, "bench-profile-started")));
  };
  const stopProfile = async (dir: string) => {
    await mkdir(dir, { recursive: true });
    const out: Record<string, string> = {};
    await Promise.all(
      probed().map(async (p) => {
        const file = join(dir, `${options.label}-${p.label}.cpuprofile`);
        await ask(p, { type: "bench-profile", action: "stop", file }, "bench-profile-done");
        out[p.label] = file;
      }),
    );
    return out;
  };

  const stackStarted = performance.now();
  try {
    for (const name of SERVICE_ORDER) {
      const count = name === "inference-worker" ? options.workers : 1;
      for (let n = 1; n <= count; n++) {
        const label = name === "inference-worker" ? `worker-${n}` : name;
        const script = runtime === "tsx" ? resolve(REPO_ROOT, "services", name, "src", "main.ts") : compiledEntry(name);
        const execArgv = [...(runtime === "tsx" ? TSX_NODE_ARGS : []), ...serviceV8Args(name)];
        const childEnv: NodeJS.ProcessEnv = { ...env };
        if (name === "inference-worker") childEnv.ATLAS_WORKER_ID = label;
        const heap = name === "api" && options.heapProbe !== undefined;
        if (probeLabels.has(label) || heap) execArgv.push("--import", resolve(REPO_ROOT, "bench", "probe", "probe.ts"));
        if (heap) {
          childEnv.BENCH_PROBE_HEAP = "1";
          if (options.heapProbe?.gcEveryMs !== undefined) {
            execArgv.push("--expose-gc");
            childEnv.BENCH_HEAP_GC_MS = String(options.heapProbe.gcEveryMs);
          }
        }
        const logFile = join(logDir, `${label}.log`);
        const fd = openSync(logFile, "a");
        const spawned = performance.now();
        const child = spawnTracked(process.execPath, [...execArgv, script], {
          cwd: REPO_ROOT,
          env: childEnv,
          stdio: ["ignore", fd, fd, "ipc"],
        });
        if (name === "api") {
          child.on("message", (msg: unknown) => {
            if (typeof msg === "object" && msg !== null && (msg as { type?: unknown }).type === "bench-heap") {
              heapSamples.push((msg as { sample: HeapSample }).sample);
            }
          });
        }
        const proc: StackProcess = { name, label, pid: child.pid ?? -1, child, startMs: Number.NaN };
        processes.push(proc);
        await waitReady(child, label, logFile, timeoutMs);
        proc.startMs = performance.now() - spawned;
      }
    }
    const baseUrl = `http://127.0.0.1:${port}`;
    // With no worker (simulated ones come later) there is nothing to serve yet: each service said it is ready.
    if (options.workers > 0) await waitServing(baseUrl, options.modelId, options.workers, timeoutMs, processes);
    const startMs = performance.now() - stackStarted;
    return {
      label: options.label,
      baseUrl,
      natsUrl: nats.url,
      prefix,
      modelId: options.modelId,
      nats,
      processes,
      heapSamples,
      logDir,
      runtime,
      startMs,
      pids: () => ({ "nats-server": nats.pid, ...Object.fromEntries(processes.map((p) => [p.label, p.pid])) }),
      startProfile,
      stopProfile,
      stop,
    };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}

/** Polls status until the scheduler sees every worker alive and a one-token completion succeeds. */
async function waitServing(baseUrl: string, model: string, workers: number, timeoutMs: number, processes: StackProcess[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const dead = processes.find((p) => exited(p.child));
    if (dead !== undefined) throw new Error(`${dead.label} exited while the stack was starting`);
    try {
      const status = (await (await fetch(`${baseUrl}/v1/atlas/status`)).json()) as {
        scheduler?: { workers?: { alive?: boolean }[] } | null;
      };
      const alive = (status.scheduler?.workers ?? []).filter((w) => w.alive === true).length;
      if (alive >= workers) {
        const r = await fetch(`${baseUrl}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model, messages: [{ role: "user", content: "hello" }], max_tokens: 1 }),
        });
        last = `${r.status} ${await r.text()}`;
        if (r.ok) return;
      } else last = `${alive}/${workers} workers alive at the scheduler`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`The stack did not serve within ${timeoutMs} ms: ${last}`);
}

export { whenExited };

/**
 * The usual stack of a scenario: one worker on the tiny model with the run's slots, context and
 * threads, in the run's temp folder; `extra` adds or overrides options.
 */
export function startBenchStack(ctx: BenchContext, label: string, extra: Partial<StackOptions> = {}): Promise<Stack> {
  const { slots, ctxSize, threads } = ctx.settings;
  const { tiny } = ctx.models;
  return startStack({ label, modelPath: tiny.path, modelId: tiny.id, workers: 1, slots, ctxSize, threads, tmpDir: ctx.tmpDir, ...extra });
}
