/**
 * Scenario 1, overhead: the full stack (HTTP → api → scheduler lease → worker over NATS →
 * engine → back) against the same engine called in-process, one-token chat requests on the tiny
 * model, so nearly all of the stack's latency is what the system adds.
 *
 * Two measures of "added latency":
 * - **distribution**: a percentile of the stack's client-side latency minus the same percentile
 *   of the in-process engine call's latency (same model, slots, threads, request);
 * - **per request**: client latency minus the engine time the worker reports in `atlas.timings`
 *   (queue + time to first token + generation; it leaves out prompt rendering and tokenizing,
 *   which the in-process call includes, so this measure is slightly pessimistic).
 *
 * @module
 */
import { type BenchContext, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { chatJob, type DirectResult, runDirect } from "../lib/direct.ts";
import { type LoadResult, loadWithCpu, steadyWarmup } from "../lib/load.ts";
import { startBenchStack } from "../lib/stack.ts";
import { fmt, roundSummary } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];

/** Runs the overhead scenario. */
export async function overheadScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const { slots, ctxSize, threads } = ctx.settings;
  const durationS = ctx.quick ? 4 : 10;
  const warmupS = ctx.quick ? 1 : 2;
  const concurrencies = [1, 32];

  ctx.log(`overhead: in-process engine, c=${concurrencies.join(",")}, ${durationS} s each`);
  const direct = await runDirect(
    { modelPath: tiny.path, slots, ctxSize, threads },
    concurrencies.map((c, i) => ({
      model: tiny.id,
      connections: c,
      durationS,
      warmupS,
      warmupRequests: steadyWarmup(ctx.quick, i),
      request: chatJob(MESSAGES, 1),
    })),
  );

  ctx.log("overhead: full stack");
  const stack = await startBenchStack(ctx, "overhead");
  const http: LoadResult[] = [];
  const cpu: Record<string, number>[] = [];
  try {
    for (const [i, c] of concurrencies.entries()) {
      const { result, cpuMsPerRequest } = await loadWithCpu(stack.pids(), {
        url: `${stack.baseUrl}/v1/chat/completions`,
        body: { model: tiny.id, messages: MESSAGES, max_tokens: 1, atlas: {} },
        connections: c,
        durationS,
        warmupS,
        warmupRequests: steadyWarmup(ctx.quick, i),
      });
      cpu.push(cpuMsPerRequest);
      http.push(result);
    }
  } finally {
    await stack.stop();
  }

  const rows: (string | number)[][] = [];
  const added: { c: number; p50: number; p95: number; p99: number }[] = [];
  concurrencies.forEach((c, i) => {
    const d = direct[i] as DirectResult;
    const h = http[i] as LoadResult;
    const a = { c, p50: h.latencyMs.p50 - d.latencyMs.p50, p95: h.latencyMs.p95 - d.latencyMs.p95, p99: h.latencyMs.p99 - d.latencyMs.p99 };
    added.push(a);
    rows.push([
      c,
      `${fmt(d.latencyMs.p50, 3)} / ${fmt(d.latencyMs.p95, 3)} / ${fmt(d.latencyMs.p99, 3)}`,
      `${fmt(h.latencyMs.p50, 3)} / ${fmt(h.latencyMs.p95, 3)} / ${fmt(h.latencyMs.p99, 3)}`,
      `**${fmt(a.p50, 3)} / ${fmt(a.p95, 3)} / ${fmt(a.p99, 3)}**`,
      h.overheadMs === undefined ? "–" : `${fmt(h.overheadMs.p50, 3)} / ${fmt(h.overheadMs.p95, 3)} / ${fmt(h.overheadMs.p99, 3)}`,
      h.engineMs === undefined ? "–" : `${fmt(h.engineMs.p50, 3)} / ${fmt(h.engineMs.p99, 3)}`,
      `${fmt(d.rps, 0)} / ${fmt(h.rps, 0)}`,
      d.errors + h.errors + h.non2xx,
    ]);
  });

  const labels = Object.keys(cpu[0] ?? {});
  const cpuRows = labels.map((k) => [k, ...cpu.map((x) => fmt(x[k], 3))]);
  const cpuTotal = cpu.map((x) => Object.values(x).reduce((s, v) => s + (Number.isFinite(v) ? v : 0), 0));
  cpuRows.push(["**all processes**", ...cpuTotal.map((v) => `**${fmt(v, 3)}**`)]);

  const a1 = added[0]!;
  const targets: Target[] = [
    {
      scenario: "overhead",
      target: "added latency p50 ≤ 1 ms at concurrency 1",
      met: a1.p50 <= 1,
      detail: `added p50 is ${fmt(a1.p50, 2)} ms (stack ${fmt(http[0]!.latencyMs.p50, 2)} ms vs engine in-process ${fmt(direct[0]!.latencyMs.p50, 2)} ms).`,
    },
    {
      scenario: "overhead",
      target: "added latency p95 ≤ 3 ms at concurrency 1",
      met: a1.p95 <= 3,
      detail: `added p95 is ${fmt(a1.p95, 2)} ms (stack ${fmt(http[0]!.latencyMs.p95, 2)} ms vs engine ${fmt(direct[0]!.latencyMs.p95, 2)} ms).`,
    },
  ];

  const markdown = [
    `One-token chat requests (\`max_tokens: 1\`, prompt "Hello", the same request body every time, so the slot's prompt prefix is reused in both cases) on the tiny model, ${durationS} s per run after a ${warmupS} s warm-up (the first run of each process after ${steadyWarmup(ctx.quick, 0).toLocaleString("en-US")} discarded requests more, the stack's and the engine's alike: a fresh process runs slower until V8 has compiled its hot code, see \`STEADY_WARMUP_REQUESTS\` in bench/lib/load.ts). The stack request carries \`atlas: {}\` so each response reports the engine's own timings. Latencies in ms, client side; "added" = stack percentile − in-process engine percentile.`,
    "",
    table(
      [
        "concurrency",
        "engine in-process p50 / p95 / p99",
        "full stack p50 / p95 / p99",
        "added p50 / p95 / p99",
        "per request: client − engine timings p50 / p95 / p99",
        "engine time in stack p50 / p99",
        "req/s engine / stack",
        "errors",
      ],
      rows,
    ),
    "",
    "CPU time per request of each process of the stack (ms, from `/proc/<pid>/stat`, over the whole run): where the added latency is spent.",
    "",
    table(["process", ...concurrencies.map((c) => `c=${c}`)], cpuRows),
  ].join("\n");

  return {
    name: "overhead",
    title: "1. Overhead: full stack vs the engine in-process",
    data: {
      durationS,
      warmupS,
      direct: direct.map((d) => ({ ...d, latencyMs: roundSummary(d.latencyMs), engineMs: roundSummary(d.engineMs) })),
      stack: http.map((h) => ({
        ...h,
        latencyMs: roundSummary(h.latencyMs),
        engineMs: h.engineMs && roundSummary(h.engineMs),
        overheadMs: h.overheadMs && roundSummary(h.overheadMs),
      })),
      addedMs: added,
      cpuMsPerRequest: Object.fromEntries(concurrencies.map((c, i) => [`c${c}`, cpu[i]])),
    },
    markdown,
    targets,
    headlines: [
      { figure: "added latency at c=1, p50 / p95 / p99 (ms)", value: `${fmt(a1.p50, 2)} / ${fmt(a1.p95, 2)} / ${fmt(a1.p99, 2)}` },
      {
        figure: "added latency at c=32, p50 / p95 / p99 (ms)",
        value: `${fmt(added[1]!.p50, 2)} / ${fmt(added[1]!.p95, 2)} / ${fmt(added[1]!.p99, 2)}`,
      },
      { figure: "CPU per one-token request, all processes, c=1 (ms)", value: fmt(cpuTotal[0], 2) },
    ],
  };
}
