/**
 * What the system costs, on each runtime (TypeScript through the tsx loader, as today; the
 * JavaScript `npm run build` emits, which production `npm start` runs) when that runtime is
 * there:
 * - **start time**: each service's spawn → its `ready` message (services start one after the
 *   other), and the whole stack's first spawn → a completion served;
 * - **idle RSS** of api, scheduler, metrics and persistence (the worker holds the model, so it is
 *   shown apart), a few seconds after start;
 * - **CPU per request at concurrency 1**: every process's user + system time (`/proc/<pid>/stat`,
 *   nats-server included) over a fixed number of one-token requests;
 * - **the api's own latency budget**: session requests (`atlas.session_id`) at concurrency 1,
 *   and the api's `atlas_requests_over_budget_total` from its Prometheus `/metrics` before and
 *   after (`ATLAS_LATENCY_BUDGET_MS` at its default, 5 ms: requests whose time outside the engine
 *   exceeded it).
 *
 * @module
 */
import { type BenchContext, cpuSnapshot, rssSnapshot, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { type LoadResult, loadWithCpu, runLoad, steadyWarmup } from "../lib/load.ts";
import { countersAfter, type RequestCounters, requestCounters } from "../lib/prometheus.ts";
import { missingCompiledEntries, REPO_ROOT, type Runtime, staleCompiledSources, startBenchStack } from "../lib/stack.ts";
import { fmt, roundSummary } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];
const RSS_SERVICES = ["api", "scheduler", "metrics", "persistence"];
const RSS_TARGET_MIB = 300;
const CPU_TARGET_MS = 1.5;
const OVER_BUDGET_TARGET = 0.05;
const TURNS = 10;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Measured {
  runtime: Runtime;
  measured: true;
  /** Compiled runtime: sources newer than their `dist/` output (the stack ran older code). */
  staleSources: string[];
  startMs: Record<string, number>;
  stackStartMs: number;
  idleRssMiB: Record<string, number>;
  afterLoadRssMiB: Record<string, number>;
  /** CPU ms per second of each process while idle (the background the per-request figures include). */
  idleCpuMsPerS: Record<string, number>;
  cpu: { requests: number; durationS: number; cpuMsPerRequest: Record<string, number>; latencyMs: LoadResult["latencyMs"] };
  budget: {
    requests: number;
    sessions: number;
    before: RequestCounters;
    after: RequestCounters;
    overBudget: number;
    counted: number;
    load: LoadResult;
  };
}

interface NotMeasured {
  runtime: Runtime;
  measured: false;
  reason: string;
}

type RuntimeResult = Measured | NotMeasured;

const total = (x: Record<string, number>, keys?: string[]) =>
  (keys ?? Object.keys(x)).reduce((s, k) => s + (Number.isFinite(x[k]) ? x[k]! : 0), 0);

async function measure(ctx: BenchContext, runtime: Runtime): Promise<RuntimeResult> {
  if (runtime === "compiled") {
    const missing = missingCompiledEntries();
    if (missing.length > 0) {
      return {
        runtime,
        measured: false,
        reason: `not measured (run npm run build first): ${missing.length} compiled entry point(s) missing, e.g. ${missing[0]!.slice(REPO_ROOT.length)}`,
      };
    }
  }
  const { tiny } = ctx.models;
  const cpuRequests = ctx.quick ? 500 : 3000;
  const budgetRequests = ctx.quick ? 200 : 1000;
  ctx.log(`footprint/${runtime}: start, idle RSS, CPU over ${cpuRequests} requests at c=1, budget over ${budgetRequests} session requests`);
  const stack = await startBenchStack(ctx, `footprint-${runtime}`, {
    runtime,
    // The product's default budget: whatever the benchmark's own environment says stays out.
    env: { ATLAS_LATENCY_BUDGET_MS: undefined },
  });
  try {
    const startMs = Object.fromEntries(stack.processes.map((p) => [p.label, p.startMs]));
    await sleep(ctx.quick ? 2000 : 4000);
    const idleRssMiB = rssSnapshot(stack.pids());
    const idleS = ctx.quick ? 3 : 10;
    const c0 = cpuSnapshot(stack.pids());
    const t0 = performance.now();
    await sleep(idleS * 1000);
    const c1 = cpuSnapshot(stack.pids());
    const idleSeconds = (performance.now() - t0) / 1000;
    const idleCpuMsPerS = Object.fromEntries(Object.keys(c0).map((k) => [k, ((c1[k]! - c0[k]!) * 1000) / idleSeconds]));

    const url = `${stack.baseUrl}/v1/chat/completions`;
    const cpu = await loadWithCpu(stack.pids(), {
      url,
      body: { model: tiny.id, messages: MESSAGES, max_tokens: 1 },
      connections: 1,
      durationS: 0,
      amount: cpuRequests,
      warmupAmount: steadyWarmup(ctx.quick, 0),
    });

    const sessionBody = { model: tiny.id, messages: MESSAGES, max_tokens: 1, atlas: {} };
    const prefix = `bench-budget-${runtime}`;
    await runLoad({
      url,
      body: sessionBody,
      connections: 1,
      durationS: 0,
      // The session path (memory recall and append, persistence) warms up as the stateless one
      // does: discarded session turns first, 100 sessions of TURNS.
      amount: ctx.quick ? 100 : 1000,
      sessions: { prefix: `${prefix}-warm`, turns: TURNS },
    });
    // Wait for the warm-up's events to be counted, so they stay out of the difference.
    const settled = await settle(stack.baseUrl, await requestCounters(stack.baseUrl));
    const load = await runLoad({
      url,
      body: sessionBody,
      connections: 1,
      durationS: 0,
      amount: budgetRequests,
      sessions: { prefix, turns: TURNS },
    });
    const after = await countersAfter(stack.baseUrl, settled.ok + load.requests);
    const afterLoadRssMiB = rssSnapshot(stack.pids());
    return {
      runtime,
      measured: true,
      staleSources: runtime === "compiled" ? staleCompiledSources() : [],
      startMs,
      stackStartMs: stack.startMs,
      idleRssMiB,
      afterLoadRssMiB,
      idleCpuMsPerS,
      cpu: {
        requests: cpu.result.requests,
        durationS: cpu.result.durationS,
        cpuMsPerRequest: cpu.cpuMsPerRequest,
        latencyMs: cpu.result.latencyMs,
      },
      budget: {
        requests: load.requests,
        sessions: Math.ceil(budgetRequests / TURNS),
        before: settled,
        after,
        overBudget: after.overBudget - settled.overBudget,
        counted: after.ok - settled.ok,
        load,
      },
    };
  } finally {
    await stack.stop();
  }
}

/** Scrapes until two scrapes 1 s apart agree on the request count. */
async function settle(baseUrl: string, first: RequestCounters): Promise<RequestCounters> {
  let last = first;
  for (let i = 0; i < 15; i++) {
    await sleep(1000);
    const now = await requestCounters(baseUrl);
    if (now.all === last.all) return now;
    last = now;
  }
  return last;
}

/** Runs the footprint scenario. */
export async function footprintScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const results: RuntimeResult[] = [];
  for (const runtime of ["tsx", "compiled"] as const) results.push(await measure(ctx, runtime));
  const measured = results.filter((r): r is Measured => r.measured);
  // The runtime production runs (compiled) judges CPU and the budget when it was measured.
  const judged = measured.find((r) => r.runtime === "compiled") ?? measured.find((r) => r.runtime === "tsx");
  const idleSum = (r: Measured) => total(r.idleRssMiB, RSS_SERVICES);
  const cpuTotal = (r: Measured) => total(r.cpu.cpuMsPerRequest);
  const idleShare = (r: Measured) => (total(r.idleCpuMsPerS) * r.cpu.durationS) / r.cpu.requests;
  const overPct = (r: Measured) => (r.budget.counted > 0 ? r.budget.overBudget / r.budget.counted : Number.NaN);
  const staleTag = (r: Measured) =>
    r.staleSources.length === 0 ? "" : ` The compiled build was older than ${r.staleSources.length} source file(s).`;
  const other = measured.find((r) => r !== judged);

  const targets: Target[] = [
    // Judged on the runtime production runs (compiled: `npm start`, the images); the TypeScript
    // loader's figure (development and tests) is given beside it.
    {
      scenario: "footprint",
      target: `idle RSS of api + scheduler + metrics + persistence ≤ ${RSS_TARGET_MIB} MiB (the production runtime: compiled JavaScript)`,
      met: judged === undefined ? null : idleSum(judged) <= RSS_TARGET_MIB,
      detail:
        judged === undefined
          ? (results.find((r) => !r.measured)?.reason ?? "not measured in this run.")
          : `${fmt(idleSum(judged), 0)} MiB on the ${judged.runtime} runtime: ${RSS_SERVICES.map((k) => `${k} ${fmt(judged.idleRssMiB[k], 0)}`).join(", ")} (VmRSS a few seconds after start)${other === undefined ? "" : `; ${fmt(idleSum(other), 0)} MiB on the ${other.runtime === "tsx" ? "tsx loader (development and tests)" : other.runtime}`}.${staleTag(judged)}`,
    },
    {
      scenario: "footprint",
      target: `CPU per one-token request, all processes incl. nats-server, c=1 ≤ ${CPU_TARGET_MS} ms`,
      met: judged === undefined ? null : cpuTotal(judged) <= CPU_TARGET_MS,
      detail:
        judged === undefined
          ? "not measured in this run."
          : `${fmt(cpuTotal(judged), 2)} ms on the ${judged.runtime} runtime over ${judged.cpu.requests} requests (${Object.entries(
              judged.cpu.cpuMsPerRequest,
            )
              .map(([k, v]) => `${k} ${fmt(v, 2)}`)
              .join(
                ", ",
              )}), of which ≈ ${fmt(idleShare(judged), 2)} ms is the idle background over the run's ${fmt(judged.cpu.durationS, 1)} s${other === undefined ? "" : `; ${fmt(cpuTotal(other), 2)} ms on ${other.runtime}`}.${staleTag(judged)}`,
    },
    {
      scenario: "footprint",
      target: `session requests over the api's latency budget (default ${judged === undefined ? 5 : fmt(judged.budget.after.budgetMs, 0)} ms) ≤ ${OVER_BUDGET_TARGET * 100}% at c=1`,
      met: judged === undefined || !(judged.budget.counted > 0) ? null : overPct(judged) <= OVER_BUDGET_TARGET,
      detail:
        judged === undefined
          ? "not measured in this run."
          : `${fmt(overPct(judged) * 100, 1)}% on the ${judged.runtime} runtime: atlas_requests_over_budget_total grew by ${judged.budget.overBudget} while ${judged.budget.counted} successful requests were counted (${judged.budget.requests} sent, ${judged.budget.sessions} sessions × ${TURNS} turns); client-side latency − engine time p50 / p95 ${fmt(judged.budget.load.overheadMs?.p50, 2)} / ${fmt(judged.budget.load.overheadMs?.p95, 2)} ms${other === undefined ? "" : `; ${fmt(overPct(other) * 100, 1)}% on ${other.runtime}`}.${staleTag(judged)}`,
    },
  ];

  const labels = [...new Set(measured.flatMap((r) => Object.keys(r.idleRssMiB)))];
  const col = (r: RuntimeResult) => (r.runtime === "tsx" ? "tsx loader" : "compiled");
  const na = (r: RuntimeResult, f: (m: Measured) => string) => (r.measured ? f(r) : "–");
  const notMeasured = results.filter((r): r is NotMeasured => !r.measured);
  const stale = measured.flatMap((r) => r.staleSources);
  const staleNote =
    stale.length === 0
      ? ""
      : ` **The compiled build was older than ${stale.length} source file(s)** (e.g. \`${stale[0]}\`): the compiled stack ran the code as last built (\`npm run build\` refreshes it).`;
  const markdown = [
    "Each runtime gets its own fresh stack (1 worker, tiny model): `tsx loader` runs `node --conditions=development --import tsx services/<name>/src/main.ts` (what `npm run dev` runs, and the benchmark's other stacks), `compiled` runs `node services/<name>/dist/main.js` from `npm run build` (what `npm start` runs). CPU per request and the latency budget are judged on the compiled runtime when it was measured.",
    notMeasured.length === 0 && staleNote === "" ? "" : `\n${notMeasured.map((r) => `**${col(r)}**: ${r.reason}.`).join(" ")}${staleNote}`,
    "",
    "**Start time** (ms): each service's spawn → its `ready` message (they start one after the other, in this order), and the whole stack's first spawn → a completion served:",
    "",
    table(
      ["process", ...results.map(col)],
      [
        ...labels.filter((k) => k !== "nats-server").map((k) => [k, ...results.map((r) => na(r, (m) => fmt(m.startMs[k], 0)))]),
        ["api + scheduler + metrics + persistence", ...results.map((r) => na(r, (m) => fmt(total(m.startMs, RSS_SERVICES), 0)))],
        ["**whole stack, to first completion**", ...results.map((r) => na(r, (m) => `**${fmt(m.stackStartMs, 0)}**`))],
      ],
    ),
    "",
    "**Resident memory** (MiB, VmRSS): idle a few seconds after start, and after the CPU and budget runs:",
    "",
    table(
      ["process", ...results.flatMap((r) => [`${col(r)} idle`, `${col(r)} after load`])],
      [
        ...labels.map((k) => [
          k,
          ...results.flatMap((r) => [na(r, (m) => fmt(m.idleRssMiB[k], 1)), na(r, (m) => fmt(m.afterLoadRssMiB[k], 1))]),
        ]),
        [
          "**api + scheduler + metrics + persistence**",
          ...results.flatMap((r) => [
            na(r, (m) => `**${fmt(idleSum(m), 1)}**`),
            na(r, (m) => fmt(total(m.afterLoadRssMiB, RSS_SERVICES), 1)),
          ]),
        ],
      ],
    ),
    "",
    `**CPU per request at concurrency 1** (ms of user + system time per one-token request, stateless, over ${measured[0]?.cpu.requests ?? "–"} requests after ${steadyWarmup(ctx.quick, 0).toLocaleString("en-US")} discarded ones, \`STEADY_WARMUP_REQUESTS\` in bench/lib/load.ts; the load generator is not counted). The idle column is each process's background CPU (timers, heartbeats) in ms per second without requests; the per-request figures include that background for the run's length.`,
    "",
    table(
      ["process", ...results.flatMap((r) => [`${col(r)} ms / request`, `${col(r)} idle ms / s`])],
      [
        ...labels.map((k) => [
          k,
          ...results.flatMap((r) => [na(r, (m) => fmt(m.cpu.cpuMsPerRequest[k], 3)), na(r, (m) => fmt(m.idleCpuMsPerS[k], 2))]),
        ]),
        [
          "**all processes**",
          ...results.flatMap((r) => [na(r, (m) => `**${fmt(cpuTotal(m), 3)}**`), na(r, (m) => fmt(total(m.idleCpuMsPerS), 2))]),
        ],
        [
          "latency p50 / p99 (ms)",
          ...results.flatMap((r) => [na(r, (m) => `${fmt(m.cpu.latencyMs.p50, 2)} / ${fmt(m.cpu.latencyMs.p99, 2)}`), ""]),
        ],
      ],
    ),
    "",
    `**Latency budget** (\`ATLAS_LATENCY_BUDGET_MS\`, default 5 ms, as \`atlas_latency_budget_seconds\` reported): one-token session requests at concurrency 1 (${measured[0]?.budget.sessions ?? "–"} sessions × ${TURNS} consecutive turns, after ${ctx.quick ? 100 : 1000} discarded session turns and the CPU run's stateless requests), the api's \`atlas_requests_over_budget_total\` and \`atlas_requests_total{status="ok"}\` read from \`GET /metrics\` before and after (the metrics service counts the api's per-request events; the "after" scrape waits until every request is counted). The client-side column is the load generator's latency − the engine time in \`atlas.timings\`.`,
    "",
    table(
      ["", ...results.map(col)],
      [
        ["budget in effect (ms)", ...results.map((r) => na(r, (m) => fmt(m.budget.after.budgetMs, 2)))],
        ["requests counted ok", ...results.map((r) => na(r, (m) => String(m.budget.counted)))],
        ["over budget", ...results.map((r) => na(r, (m) => `**${m.budget.overBudget} (${fmt(overPct(m) * 100, 1)}%)**`))],
        [
          "client − engine p50 / p95 / p99 (ms)",
          ...results.map((r) =>
            na(
              r,
              (m) =>
                `${fmt(m.budget.load.overheadMs?.p50, 2)} / ${fmt(m.budget.load.overheadMs?.p95, 2)} / ${fmt(m.budget.load.overheadMs?.p99, 2)}`,
            ),
          ),
        ],
        ["errors", ...results.map((r) => na(r, (m) => String(m.budget.load.errors + m.budget.load.non2xx)))],
      ],
    ),
  ].join("\n");

  const headlines = [
    {
      figure: "idle RSS, api + scheduler + metrics + persistence (MiB): tsx / compiled",
      value: results.map((r) => na(r, (m) => fmt(idleSum(m), 0))).join(" / "),
    },
    {
      figure: "stack start to first completion (s): tsx / compiled",
      value: results.map((r) => na(r, (m) => fmt(m.stackStartMs / 1000, 1))).join(" / "),
    },
    {
      figure: `CPU per one-token request, all processes, c=1, fixed count (ms, ${judged?.runtime ?? "–"})`,
      value: judged === undefined ? "–" : fmt(cpuTotal(judged), 2),
    },
    {
      figure: `session requests over the latency budget, c=1 (${judged?.runtime ?? "–"})`,
      value: judged === undefined ? "–" : `${fmt(overPct(judged) * 100, 1)}%`,
    },
  ];
  return {
    name: "footprint",
    title: "Footprint: start time, idle memory, CPU per request, latency budget",
    data: results.map((r) =>
      r.measured
        ? {
            ...r,
            cpu: { ...r.cpu, latencyMs: roundSummary(r.cpu.latencyMs) },
            budget: {
              ...r.budget,
              load: {
                ...r.budget.load,
                latencyMs: roundSummary(r.budget.load.latencyMs),
                engineMs: r.budget.load.engineMs && roundSummary(r.budget.load.engineMs),
                overheadMs: r.budget.load.overheadMs && roundSummary(r.budget.load.overheadMs),
              },
            },
          }
        : r,
    ),
    markdown,
    targets,
    headlines,
  };
}
