/**
 * Scenario 5, scale and soak:
 * - 1 vs 2 inference workers (tiny model): one-token requests/s at concurrency 32 and decode
 *   tokens/s at concurrency 8, resident memory of every process idle and under load;
 * - soak: 64 concurrent clients for `--soak-minutes` (default 2; the issue's full soak is 10),
 *   counting every error, sampling each process's RSS every 5 s and the api's live heap after a
 *   forced full GC every 10 s (`bench/probe/probe.ts`, `--expose-gc` on the api only), then
 *   fitting a line through the heap samples: a leak shows as a steady positive slope.
 *
 * @module
 */
import { type BenchContext, rssSnapshot, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { type LoadResult, loadWithCpu, runLoad } from "../lib/load.ts";
import { startBenchStack, startStack } from "../lib/stack.ts";
import { fmt, linearFit } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];

/** A heap "grows" when a line through the live-heap samples rises faster than this and fits them this well. */
const TREND_MIB_PER_MIN = 0.25;
const TREND_R2 = 0.5;

interface WorkerPoint {
  workers: number;
  idleRss: Record<string, number>;
  loadRss: Record<string, number>;
  oneToken: LoadResult;
  oneTokenCpu: Record<string, number>;
  decode: LoadResult;
}

/** Samples RSS of every process every `everyMs` while `work` runs. */
async function sampleWhile<T>(
  pids: Record<string, number>,
  everyMs: number,
  work: Promise<T>,
): Promise<{ value: T; samples: { t: number; rss: Record<string, number> }[] }> {
  const samples: { t: number; rss: Record<string, number> }[] = [];
  const t0 = Date.now();
  const timer = setInterval(() => samples.push({ t: (Date.now() - t0) / 1000, rss: rssSnapshot(pids) }), everyMs);
  try {
    return { value: await work, samples };
  } finally {
    clearInterval(timer);
  }
}

function peak(samples: { rss: Record<string, number> }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) for (const [k, v] of Object.entries(s.rss)) out[k] = Math.max(out[k] ?? 0, Number.isFinite(v) ? v : 0);
  return out;
}

/** Runs the scale and soak scenario. */
export async function scaleScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const { slots, ctxSize, threads } = ctx.settings;
  const durationS = ctx.quick ? 3 : 10;
  const warmupS = ctx.quick ? 1 : 2;
  const points: WorkerPoint[] = [];
  for (const workers of [1, 2]) {
    ctx.log(`scale: ${workers} worker(s)`);
    const stack = await startStack({
      label: `scale-${workers}`,
      modelPath: tiny.path,
      modelId: tiny.id,
      workers,
      slots,
      ctxSize,
      threads,
      tmpDir: ctx.tmpDir,
    });
    try {
      await new Promise((r) => setTimeout(r, 2000));
      const idleRss = rssSnapshot(stack.pids());
      const url = `${stack.baseUrl}/v1/chat/completions`;
      const one = await sampleWhile(
        stack.pids(),
        1000,
        loadWithCpu(stack.pids(), {
          url,
          body: { model: tiny.id, messages: MESSAGES, max_tokens: 1 },
          connections: 32,
          durationS,
          warmupS,
        }),
      );
      const decode = await runLoad({
        url,
        body: { model: tiny.id, messages: MESSAGES, max_tokens: 128, ignore_eos: true },
        connections: 8,
        durationS,
        warmupS,
      });
      points.push({
        workers,
        idleRss,
        loadRss: peak(one.samples),
        oneToken: one.value.result,
        oneTokenCpu: one.value.cpuMsPerRequest,
        decode,
      });
    } finally {
      await stack.stop();
    }
  }

  // Soak.
  const soakS = Math.round(ctx.soakMinutes * 60);
  ctx.log(`soak: 64 concurrent for ${soakS} s`);
  const stack = await startBenchStack(ctx, "soak", {
    heapProbe: { gcEveryMs: 10_000 },
  });
  let soak: LoadResult;
  let soakSamples: { t: number; rss: Record<string, number> }[];
  let idleBefore: Record<string, number>;
  let idleAfter: Record<string, number>;
  const heapStart = Date.now();
  try {
    await new Promise((r) => setTimeout(r, 3000));
    idleBefore = rssSnapshot(stack.pids());
    const run = await sampleWhile(
      stack.pids(),
      5000,
      runLoad({
        url: `${stack.baseUrl}/v1/chat/completions`,
        body: { model: tiny.id, messages: MESSAGES, max_tokens: 8 },
        connections: 64,
        durationS: soakS,
        timeoutS: 60,
        exactDuration: true,
      }),
    );
    soak = run.value;
    soakSamples = run.samples;
    await new Promise((r) => setTimeout(r, 12_000));
    idleAfter = rssSnapshot(stack.pids());
  } finally {
    await stack.stop();
  }
  const forced = stack.heapSamples
    .filter((s) => s.kind === "forced")
    .map((s) => ({ t: (s.t - heapStart) / 1000, heapMiB: s.heapUsed / 2 ** 20, rssMiB: s.rss / 2 ** 20 }));
  // Judge the second half of the load window: the first minutes fill bounded structures and
  // JIT code (measured: ~0.9 MiB/min for 5 min, then flat), which is warm-up, not a leak.
  const loadStart = 3;
  const inLoad = forced.filter((s) => s.t >= loadStart + soakS * 0.5 && s.t <= loadStart + soakS);
  const heapPeak = Math.max(...forced.map((s) => s.heapMiB));
  const fit = linearFit(
    inLoad.map((s) => s.t / 60),
    inLoad.map((s) => s.heapMiB),
  );
  const heapFirst = inLoad[0]?.heapMiB ?? Number.NaN;
  const heapLast = inLoad[inLoad.length - 1]?.heapMiB ?? Number.NaN;
  const soakErrors = soak.errors + soak.non2xx;
  const rssFit = (label: string) => {
    const xs = soakSamples.filter((s) => s.t >= soakS * 0.2);
    return linearFit(
      xs.map((s) => s.t / 60),
      xs.map((s) => s.rss[label] ?? Number.NaN),
    ).slope;
  };
  const labels = Object.keys(idleBefore);
  const targets: Target[] = [
    {
      scenario: "scale",
      target: "64 concurrent for 60 s with zero errors",
      met: soakErrors > 0 ? false : soakS >= 60 ? true : null,
      detail: `${soak.requests.toLocaleString("en-US")} requests in ${soakS} s at 64 concurrent (${fmt(soak.rps, 0)} req/s, p99 ${fmt(soak.latencyMs.p99, 1)} ms): ${soakErrors} errors${
        soakErrors > 0
          ? ` (${Object.entries(soak.statuses)
              .map(([k, v]) => `${k}: ${v}`)
              .join(", ")}; ${soak.errorSamples[0] ?? ""})`
          : ""
      }.`,
    },
    {
      scenario: "scale",
      target: `api heap shows no growth trend over the soak (${ctx.soakMinutes} min${ctx.soakMinutes < 10 ? "; the issue asks 10" : ""})`,
      met: inLoad.length >= 3 ? !(fit.slope > TREND_MIB_PER_MIN && fit.r2 >= TREND_R2) : null,
      detail: `live heap after forced GC: ${fmt(forced[0]?.heapMiB, 2)} MiB at the start, ${fmt(heapFirst, 2)} → ${fmt(heapLast, 2)} MiB over the second half of the soak (peak ${fmt(heapPeak, 2)}); fitted slope there ${fmt(fit.slope, 3)} MiB/min (r² ${fmt(fit.r2, 2)}) over ${inLoad.length} samples, counted as a trend above ${TREND_MIB_PER_MIN} MiB/min with r² ≥ ${TREND_R2}${ctx.soakMinutes < 10 ? "; `npm run bench -- --scenarios scale --soak-minutes 10` runs the full soak" : ""}.`,
    },
  ];
  const p1 = points[0]!;
  const p2 = points[1]!;
  const markdown = [
    `**1 vs 2 workers** (tiny model, ${slots} slots each; one-token requests at concurrency 32 and decode of 128 tokens with \`ignore_eos\` at concurrency 8, ${durationS} s each):`,
    "",
    table(
      ["workers", "one-token req/s", "p50 / p99 ms", "decode tok/s", "decode p50 ms", "errors"],
      points.map((p) => [
        p.workers,
        fmt(p.oneToken.rps, 0),
        `${fmt(p.oneToken.latencyMs.p50, 2)} / ${fmt(p.oneToken.latencyMs.p99, 2)}`,
        fmt(p.decode.tokensPerS, 0),
        fmt(p.decode.latencyMs.p50, 1),
        p.oneToken.errors + p.oneToken.non2xx + p.decode.errors + p.decode.non2xx,
      ]),
    ),
    "",
    `Two workers give ${fmt(p2.oneToken.rps / p1.oneToken.rps, 2)}× the one-token rate and ${fmt(p2.decode.tokensPerS / p1.decode.tokensPerS, 2)}× the decode rate of one, on ${"2"} cores shared with the api, scheduler, NATS and the load generator. CPU ms per one-token request: ${points
      .map(
        (p) =>
          `${p.workers} worker(s): ${Object.entries(p.oneTokenCpu)
            .map(([k, v]) => `${k} ${fmt(v, 2)}`)
            .join(", ")}`,
      )
      .join("; ")}.`,
    "",
    "**Resident memory per process** (MiB, VmRSS from `/proc/<pid>/status`): idle, peak under the one-token load, and around the soak:",
    "",
    table(
      [
        "process",
        "1 worker idle",
        "1 worker load",
        "2 workers idle",
        "2 workers load",
        "soak: idle before",
        "soak: end of load",
        "soak: idle after",
        "soak RSS slope MiB/min",
      ],
      [...new Set([...labels, ...Object.keys(p2.idleRss)])].map((k) => [
        k,
        fmt(p1.idleRss[k], 1),
        fmt(p1.loadRss[k], 1),
        fmt(p2.idleRss[k], 1),
        fmt(p2.loadRss[k], 1),
        fmt(idleBefore[k], 1),
        fmt(soakSamples[soakSamples.length - 1]?.rss[k], 1),
        fmt(idleAfter[k], 1),
        labels.includes(k) ? fmt(rssFit(k), 2) : "–",
      ]),
    ),
    "",
    `**Soak**: 64 concurrent clients, \`max_tokens: 8\`, ${soakS} s, 1 worker: ${soak.requests.toLocaleString("en-US")} requests, ${fmt(soak.rps, 0)} req/s, latency p50 ${fmt(soak.latencyMs.p50, 1)} / p99 ${fmt(soak.latencyMs.p99, 1)} / max ${fmt(soak.latencyMs.max, 1)} ms, ${soakErrors} errors. The api's live heap (heapUsed right after a forced full GC, every 10 s):`,
    "",
    table(
      ["minute", ...forced.filter((_, i) => i % Math.max(1, Math.ceil(forced.length / 12)) === 0).map((s) => fmt(s.t / 60, 1))],
      [
        ["heap MiB", ...forced.filter((_, i) => i % Math.max(1, Math.ceil(forced.length / 12)) === 0).map((s) => fmt(s.heapMiB, 2))],
        ["RSS MiB", ...forced.filter((_, i) => i % Math.max(1, Math.ceil(forced.length / 12)) === 0).map((s) => fmt(s.rssMiB, 1))],
      ],
    ),
  ].join("\n");
  return {
    name: "scale",
    title: "5. Scale and soak",
    data: {
      points: points.map((p) => ({ ...p, oneToken: { ...p.oneToken }, decode: { ...p.decode } })),
      soak: {
        seconds: soakS,
        result: soak,
        rssSamples: soakSamples,
        idleBefore,
        idleAfter,
        heap: forced,
        heapSlopeMiBPerMin: fit.slope,
        heapFitR2: fit.r2,
      },
    },
    markdown,
    targets,
    headlines: [
      { figure: "one-token req/s at c=32, 1 → 2 workers", value: `${fmt(p1.oneToken.rps, 0)} → ${fmt(p2.oneToken.rps, 0)}` },
      { figure: `soak: 64 concurrent × ${soakS} s, errors`, value: String(soakErrors) },
      { figure: "api live heap slope, second half of the soak (MiB/min)", value: fmt(fit.slope, 3) },
      {
        figure: "RSS idle: api / scheduler / worker-1 (MiB)",
        value: ["api", "scheduler", "worker-1"].map((k) => fmt(p1.idleRss[k], 0)).join(" / "),
      },
    ],
  };
}
