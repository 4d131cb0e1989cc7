/**
 * The scheduler at scale: one real scheduler (with the rest of the stack, no engine) leasing the
 * slots of 64, 256 and 1,024 simulated workers (`bench/child/sim_workers.ts`: real bus clients
 * that heartbeat every second and answer `generate` at once), under a lease load from a client
 * of its own (`bench/child/dispatch_load.ts`: `SchedulerDispatch`, one lease per request, as the
 * api sends without slot credits). Reports leases/s, lease latency p50/p99 (client side, to the
 * end frame), the leader's CPU and memory, and the heartbeat traffic.
 *
 * Part of every full run (docs/benchmarks.md's scale table); alone: `npm run bench -- --scenarios
 * sched-scale`. It measures the scheduler, not ATLAS against its baselines, and on a 2-core machine
 * the load generator, the simulated workers, nats-server and the scheduler share the cores, so the
 * figures are a floor for the scheduler.
 *
 * @module
 */
import { resolve } from "node:path";
import type { DispatchLoadResult, DispatchLoadSpec } from "../child/dispatch_load.ts";
import type { SimWorkersResult, SimWorkersSpec } from "../child/sim_workers.ts";
import { type BenchContext, type ScenarioResult, table } from "../lib/context.ts";
import { runChild } from "../lib/load.ts";
import { askChild, cpuSeconds, forkTracked, residentMemory, whenExited } from "../lib/proc.ts";
import { REPO_ROOT, startStack, TSX_NODE_ARGS } from "../lib/stack.ts";
import { fmt } from "../lib/stats.ts";

/** The goal at 1,024 workers. */
const GOAL = { leasesPerSecond: 10_000, p99Ms: 5 } as const;
const SLOTS_PER_WORKER = 4;
const WORKERS_PER_CONNECTION = 32;

interface Point {
  workers: number;
  concurrency: number;
  load: DispatchLoadResult;
  sim: SimWorkersResult;
  schedulerCpuPercent: number;
  schedulerRssMiB: number;
  natsCpuPercent: number | null;
}

/** Runs the scheduler-at-scale measurement. */
export async function schedScaleScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const sizes = ctx.quick ? [64, 256] : [64, 256, 1024];
  const concurrency = 64;
  const durationMs = ctx.quick ? 5000 : 10_000;
  const points: Point[] = [];
  for (const workers of sizes) {
    ctx.log(`sched-scale: ${workers} simulated workers × ${SLOTS_PER_WORKER} slots, ${concurrency} lanes of SchedulerDispatch`);
    const stack = await startStack({
      label: `sched-scale-${workers}`,
      modelPath: ctx.models.tiny.path,
      modelId: "sim",
      workers: 0,
      slots: SLOTS_PER_WORKER,
      ctxSize: 1024,
      threads: 1,
      tmpDir: ctx.tmpDir,
      env: { ATLAS_SLOT_CREDITS: "0" },
    });
    const sim = forkTracked(resolve(REPO_ROOT, "bench", "child", "sim_workers.ts"), [], {
      cwd: REPO_ROOT,
      execArgv: [...TSX_NODE_ARGS],
      env: { ...process.env, NODE_OPTIONS: "" },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    try {
      const spec: SimWorkersSpec = {
        natsUrl: stack.natsUrl,
        prefix: stack.prefix,
        model: "sim",
        workers,
        slots: SLOTS_PER_WORKER,
        perConnection: WORKERS_PER_CONNECTION,
        intervalMs: 1000,
      };
      await askChild(sim, { type: "start", spec }, "ready", 120_000);
      await new Promise((r) => setTimeout(r, 2500)); // every worker has beaten at least twice: the pool knows them all
      const scheduler = stack.processes.find((p) => p.name === "scheduler");
      const cpu0 = scheduler === undefined ? undefined : cpuSeconds(scheduler.pid);
      const t0 = performance.now();
      const load = await runChild<DispatchLoadResult>("dispatch_load", {
        type: "run",
        spec: {
          natsUrl: stack.natsUrl,
          prefix: stack.prefix,
          model: "sim",
          concurrency,
          warmupMs: 2000,
          durationMs,
        } satisfies DispatchLoadSpec,
      });
      const seconds = (performance.now() - t0) / 1000;
      const cpu1 = scheduler === undefined ? undefined : cpuSeconds(scheduler.pid);
      const rss = scheduler === undefined ? undefined : residentMemory(scheduler.pid);
      const simResult = (await askChild(sim, { type: "stop" }, "result", 60_000)) as SimWorkersResult;
      points.push({
        workers,
        concurrency,
        load,
        sim: simResult,
        schedulerCpuPercent: cpu0 === undefined || cpu1 === undefined ? Number.NaN : ((cpu1 - cpu0) / seconds) * 100,
        schedulerRssMiB: rss?.rssMiB ?? Number.NaN,
        natsCpuPercent: null,
      });
    } finally {
      if (sim.exitCode === null) sim.kill("SIGKILL");
      await whenExited(sim);
      await stack.stop();
    }
  }

  const rows = points.map((p) => [
    p.workers.toLocaleString("en-US"),
    (p.workers * SLOTS_PER_WORKER).toLocaleString("en-US"),
    fmt(p.load.perSecond, 0),
    fmt(p.load.latencyMs.p50, 2),
    fmt(p.load.latencyMs.p99, 2),
    p.load.errors,
    fmt(p.schedulerCpuPercent, 0),
    fmt(p.schedulerRssMiB, 0),
    fmt(p.load.heartbeatsPerSecond, 0),
    fmt(p.load.heartbeatBytesPerSecond / 1024, 0),
    p.sim.staleTokens,
  ]);
  const last = points.at(-1);
  const met =
    last !== undefined && last.workers === 1024 && last.load.perSecond >= GOAL.leasesPerSecond && last.load.latencyMs.p99 <= GOAL.p99Ms;
  const markdown = [
    `One scheduler leader (with nats-server, persistence, metrics and an api on the same machine, no engine) leasing the slots of simulated workers (${SLOTS_PER_WORKER} slots each, a heartbeat every second, \`generate\` answered at once with the lease's release ahead of the end frame), under ${concurrency} lanes of \`SchedulerDispatch\` from a client of its own for ${durationMs / 1000} s after a 2 s warm-up; slot credits off, so every request is one lease granted and given back. Latency is client side, request to end frame, in ms. CPU is the scheduler process's share of one core; heartbeats as seen on the bus.`,
    "",
    table(
      [
        "workers",
        "slots",
        "leases/s",
        "p50",
        "p99",
        "errors",
        "leader CPU %",
        "leader RSS MiB",
        "heartbeats/s",
        "heartbeat KiB/s",
        "stale tokens",
      ],
      rows,
    ),
    "",
    "Stale tokens: leases a simulated worker saw with a fencing token not above what its slot admitted before (fencing says 0).",
  ].join("\n");
  return {
    name: "sched-scale",
    title: "The scheduler at scale",
    data: { slotsPerWorker: SLOTS_PER_WORKER, concurrency, durationMs, points },
    markdown,
    targets: [
      {
        scenario: "sched-scale",
        target: `≥ ${GOAL.leasesPerSecond.toLocaleString("en-US")} leases/s with p99 ≤ ${GOAL.p99Ms} ms at 1,024 workers`,
        met: last?.workers === 1024 ? met : null,
        detail:
          last === undefined
            ? "not measured"
            : `${fmt(last.load.perSecond, 0)} leases/s, p99 ${fmt(last.load.latencyMs.p99, 2)} ms at ${last.workers} workers (leader CPU ${fmt(last.schedulerCpuPercent, 0)}% of a core)`,
      },
    ],
    headlines: [],
  };
}
