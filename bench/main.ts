/**
 * `npm run bench`: ATLAS's benchmark suite. Starts the system as real processes, drives it from
 * a separate load-generator process, compares with baselines measured in the same run (the
 * engine in-process; llama-server with `--with-llama-server`, which builds it from the llama.cpp
 * release node-llama-cpp ships, or the binary `LLAMA_SERVER_BIN` names), and writes
 * `bench/results/<timestamp>.json` and a report; a full run (every scenario, not `--quick`)
 * writes `docs/benchmarks.md` and `bench/results/latest.json`. See docs/benchmarks.md for what
 * each scenario measures.
 *
 * ```sh
 * npm run bench                                   # default set, < 20 min on 2 cores
 * npm run bench -- --with-llama-server            # + llama-server (first use: ~6-10 min build)
 * npm run bench -- --scenarios overhead,lease     # some scenarios
 * npm run bench -- --quick                        # a smoke run (~6 min), report to bench/results/
 * npm run bench -- --scenarios scale --soak-minutes 10
 * npm run bench -- --scenarios decode-threads    # 1 vs 2 threads, prebuilt vs source-built llama.cpp (opt-in)
 * npm run bench -- --scenarios sched-scale       # only the scheduler with 64/256/1,024 simulated workers
 * LLAMA_SERVER_BIN=/path/to/llama-server npm run bench
 * ```
 *
 * @module
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { BenchContext, ScenarioResult, Target } from "./lib/context.ts";
import { BUILD_SCRIPT, ensureLlamaServer } from "./lib/llama_server.ts";
import { machineInfo } from "./lib/machine.ts";
import { benchModel } from "./lib/models.ts";
import { killAll, livePids } from "./lib/proc.ts";
import { renderReport } from "./lib/report.ts";
import { REPO_ROOT } from "./lib/stack.ts";
import { decodeThreadsScenario } from "./scenarios/decode_threads.ts";
import { floorScenario } from "./scenarios/floor.ts";
import { footprintScenario } from "./scenarios/footprint.ts";
import { leaseScenario } from "./scenarios/lease.ts";
import { messagesScenario } from "./scenarios/messages.ts";
import { overheadScenario } from "./scenarios/overhead.ts";
import { policyScenario } from "./scenarios/policy.ts";
import { profileScenario } from "./scenarios/profile.ts";
import { scaleScenario } from "./scenarios/scale.ts";
import { schedScaleScenario } from "./scenarios/sched_scale.ts";
import { sessionsScenario } from "./scenarios/sessions.ts";
import { stateScenario } from "./scenarios/state.ts";
import { throughputScenario } from "./scenarios/throughput.ts";

const SCENARIOS: Record<string, (ctx: BenchContext) => Promise<ScenarioResult>> = {
  // The targets in absolute milliseconds at concurrency 1 (overhead, floor, footprint) are
  // measured first, next to each other (docs/benchmarks.md, "Notes on method": order).
  overhead: overheadScenario,
  floor: floorScenario,
  footprint: footprintScenario,
  throughput: throughputScenario,
  sessions: sessionsScenario,
  policy: policyScenario,
  scale: scaleScenario,
  lease: leaseScenario,
  profile: profileScenario,
  messages: messagesScenario,
  state: stateScenario,
  "decode-threads": decodeThreadsScenario,
  "sched-scale": schedScaleScenario,
};
/**
 * Scenarios run only when named: decode-threads compares a source build of llama.cpp (npm run
 * build:engine) with the prebuilt one.
 */
const OPT_IN = new Set(["decode-threads"]);
const DEFAULT_SET = Object.keys(SCENARIOS).filter((s) => !OPT_IN.has(s));

const { values } = parseArgs({
  options: {
    scenarios: { type: "string" },
    quick: { type: "boolean", default: false },
    "soak-minutes": { type: "string" },
    md: { type: "string" },
    keep: { type: "boolean", default: false },
    "with-llama-server": { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});

if (values.help) {
  console.log(`npm run bench -- [--scenarios ${DEFAULT_SET.join(",")}]
                 [--quick] [--with-llama-server] [--soak-minutes N] [--md PATH] [--keep]

  --scenarios          comma-separated subset (default: all but decode-threads, in this order)
  --quick              short runs, tiny model only: a smoke test of the suite (~6 min)
  --with-llama-server  measure llama.cpp's llama-server beside ATLAS in this run (throughput,
                       sessions); builds it first if needed (bench/llama_server/build.sh: the
                       llama.cpp release node-llama-cpp ships, CPU, native; ~6-10 min on 2
                       cores, cached in \${XDG_CACHE_HOME:-~/.cache}/atlas-bench/)
  --soak-minutes       soak length in the scale scenario (default 2; the issue's full soak is 10)
  --md PATH            where to write the markdown report (default docs/benchmarks.md for a
                       full, non-quick run; bench/results/<timestamp>.md otherwise)
  --keep               keep the run's temp folder (service logs, NATS stores)

Scenarios: overhead (added latency), throughput, sessions (TTFT, cache tiers), policy (eviction
policies), scale (1 vs 2 workers, soak), lease, profile (CPU profiles), messages (NATS messages
per request, per subject), footprint (start time, idle RSS on tsx and compiled, CPU per request,
latency budget), state (JetStream streams under a 50,000-request load). Opt-in: decode-threads
(decode tokens/s at 1 and 2 threads, prebuilt vs source-built llama.cpp: npm run build:engine).

Results: bench/results/<timestamp>.json and .md; a full run writes docs/benchmarks.md and
bench/results/latest.json instead of the .md. The footprint scenario measures the compiled
runtime only after \`npm run build\`.

env: LLAMA_SERVER_BIN=path  use this llama-server binary (implies --with-llama-server, no build)`);
  process.exit(0);
}

const chosen = (values.scenarios ?? DEFAULT_SET.join(","))
  .split(",")
  .map((s) => s.trim())
  .filter((s) => s !== "");
const unknown = chosen.filter((s) => SCENARIOS[s] === undefined);
if (unknown.length > 0) {
  console.error(`Unknown scenario(s): ${unknown.join(", ")}; choose from ${Object.keys(SCENARIOS).join(", ")}`);
  process.exit(2);
}
const quick = values.quick === true;
const soakMinutes = Number(values["soak-minutes"] ?? (quick ? 0.34 : 2));
if (!(soakMinutes > 0)) {
  console.error("--soak-minutes must be a positive number");
  process.exit(2);
}

// llama-server: a given binary, or the benchmark's own build (before the clock starts: a first
// build takes minutes and loads the machine).
const envBin = process.env.LLAMA_SERVER_BIN === undefined || process.env.LLAMA_SERVER_BIN === "" ? undefined : process.env.LLAMA_SERVER_BIN;
let llamaServerBin: string | undefined = envBin;
if (envBin === undefined && values["with-llama-server"] === true) {
  console.log(`[bench] llama-server: building or reusing it (${relative(REPO_ROOT, BUILD_SCRIPT)})`);
  try {
    llamaServerBin = await ensureLlamaServer((m) => console.log(`[bench] ${m}`));
  } catch (err) {
    console.error(`[bench] ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
  console.log(`[bench] llama-server: ${llamaServerBin}`);
}
const llamaServerOrigin = llamaServerBin === undefined ? undefined : envBin !== undefined ? "LLAMA_SERVER_BIN" : "built";

const startedAt = new Date();
const t0 = performance.now();
const log = (m: string) => console.log(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}`);

let stopping = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (stopping) return;
  stopping = true;
  console.error(`\n${signal}: stopping every process the benchmark started`);
  void killAll().then(() => process.exit(130));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

const loadBefore = loadavg();
const tmpDir = await mkdtemp(join(tmpdir(), "atlas-bench-"));
const machine = machineInfo();
log(`machine: ${machine.cpuModel}, ${machine.cpus} CPUs, Node ${machine.node}; temp ${tmpDir}`);
log("models: generating or reusing the tiny and bench models");
const models = { tiny: await benchModel("tiny"), bench: await benchModel("bench") };
const ctx: BenchContext = {
  quick,
  tmpDir,
  settings: { slots: 4, ctxSize: 2048, threads: 1 },
  models,
  llamaServerBin,
  soakMinutes,
  log,
};

const results: ScenarioResult[] = [];
const failures: { scenario: string; error: string }[] = [];
for (const name of chosen) {
  const started = performance.now();
  log(`=== ${name}`);
  try {
    const r = await SCENARIOS[name]!(ctx);
    r.seconds = (performance.now() - started) / 1000;
    results.push(r);
    for (const t of r.targets) log(`target ${t.met === null ? "n/a " : t.met ? "MET " : "MISS"} ${t.target}: ${t.detail}`);
  } catch (err) {
    const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    failures.push({ scenario: name, error });
    log(`scenario ${name} failed: ${error}`);
  }
}

const totalSeconds = (performance.now() - t0) / 1000;
const loadAfter = loadavg();
const stamp = startedAt.toISOString().replace(/[:.]/g, "-");
const resultsDir = join(REPO_ROOT, "bench", "results");
await mkdir(resultsDir, { recursive: true });
const targets: Target[] = results.flatMap((r) => r.targets);
const json = {
  startedAt: startedAt.toISOString(),
  totalSeconds,
  quick,
  scenarios: chosen,
  machine,
  loadAverage: { before: loadBefore, after: loadAfter },
  settings: ctx.settings,
  models,
  llamaServerBin: llamaServerBin ?? null,
  llamaServerOrigin: llamaServerOrigin ?? null,
  soakMinutes,
  targets,
  failures,
  results: results.map((r) => ({
    name: r.name,
    title: r.title,
    seconds: r.seconds,
    headlines: r.headlines,
    targets: r.targets,
    data: r.data,
  })),
};
const jsonText = `${JSON.stringify(json, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2)}\n`;
await writeFile(join(resultsDir, `${stamp}.json`), jsonText);

const fullRun = !quick && DEFAULT_SET.every((s) => chosen.includes(s));
const mdPath = values.md ?? (fullRun ? join(REPO_ROOT, "docs", "benchmarks.md") : join(resultsDir, `${stamp}.md`));
// latest.json is committed with docs/benchmarks.md: only the run that writes that report replaces it.
const writesReport = resolve(mdPath) === join(REPO_ROOT, "docs", "benchmarks.md");
if (writesReport) await writeFile(join(resultsDir, "latest.json"), jsonText);
await writeFile(
  mdPath,
  renderReport({
    loadAverage: { before: loadBefore, after: loadAfter },
    machine,
    settings: ctx.settings,
    models,
    results,
    targets,
    failures,
    totalSeconds,
    startedAt,
    quick,
    soakMinutes,
    llamaServerBin,
    llamaServerOrigin,
    scenarios: chosen,
    resultsFile: relative(REPO_ROOT, join(resultsDir, writesReport ? "latest.json" : `${stamp}.json`)),
  }),
);
log(`results: ${relative(REPO_ROOT, join(resultsDir, `${stamp}.json`))}, report: ${relative(REPO_ROOT, mdPath)}`);

if (values.keep) log(`kept ${tmpDir}`);
else await rm(tmpDir, { recursive: true, force: true });
const left = livePids();
if (left.length > 0) {
  log(`killing leftover processes: ${left.join(", ")}`);
  await killAll();
}
log(
  `done in ${(totalSeconds / 60).toFixed(1)} min; ${targets.filter((t) => t.met === true).length} targets met, ${targets.filter((t) => t.met === false).length} missed, ${targets.filter((t) => t.met === null).length} not measured${failures.length > 0 ? `; ${failures.length} scenario(s) FAILED` : ""}`,
);
process.exit(failures.length > 0 ? 1 : 0);
