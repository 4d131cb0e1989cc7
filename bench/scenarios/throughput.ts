/**
 * Scenario 2, throughput: closed-loop load at several concurrencies against the in-process
 * engine, the full stack and (when the run has llama-server: `--with-llama-server` or
 * `LLAMA_SERVER_BIN`) llama-server with the same model, slots and threads, each measured in this
 * run. Two workloads:
 * - one-token chat requests on the tiny model (requests/s: the serving path's own capacity);
 * - decode on the ~100M `bench` model (`max_tokens` N with `ignore_eos`, tokens/s: the engine's
 *   capacity, which the serving path should not reduce).
 *
 * @module
 */
import { type BenchContext, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { chatJob, type DirectResult, runDirect } from "../lib/direct.ts";
import { byteTokenBias, startLlamaServer } from "../lib/llama_server.ts";
import { type LoadResult, loadWithCpu, runLoad, steadyWarmup } from "../lib/load.ts";
import type { BenchModel } from "../lib/models.ts";
import { startStack } from "../lib/stack.ts";
import { fmt, ratio, roundSummary } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];

interface Workload {
  key: "oneToken" | "decode";
  model: BenchModel;
  maxTokens: number;
  ignoreEos: boolean;
  concurrencies: number[];
  durationS: number;
  warmupS: number;
  /** Whether each system's first point starts after `steadyWarmup` requests (one-token: what it measures is the code path). */
  steady: boolean;
}

interface Row {
  c: number;
  direct: DirectResult;
  stack: LoadResult;
  stackCpuMsPerRequest: Record<string, number>;
  llama?: LoadResult;
}

async function runWorkload(ctx: BenchContext, w: Workload): Promise<Row[]> {
  const { slots, ctxSize, threads } = ctx.settings;
  const body = { model: w.model.id, messages: MESSAGES, max_tokens: w.maxTokens, ...(w.ignoreEos ? { ignore_eos: true } : {}) };
  const warmup = (index: number) => (w.steady ? steadyWarmup(ctx.quick, index) : 0);
  ctx.log(`throughput/${w.key}: in-process engine on ${w.model.preset}, c=${w.concurrencies.join(",")}`);
  const direct = await runDirect(
    { modelPath: w.model.path, slots, ctxSize, threads },
    w.concurrencies.map((c, i) => ({
      model: w.model.id,
      connections: c,
      durationS: w.durationS,
      warmupS: w.warmupS,
      warmupRequests: warmup(i),
      request: chatJob(MESSAGES, w.maxTokens, { ignore_eos: w.ignoreEos }),
    })),
  );
  ctx.log(`throughput/${w.key}: full stack`);
  const stack = await startStack({
    label: `throughput-${w.key}`,
    modelPath: w.model.path,
    modelId: w.model.id,
    workers: 1,
    slots,
    ctxSize,
    threads,
    tmpDir: ctx.tmpDir,
  });
  const http: { result: LoadResult; cpuMsPerRequest: Record<string, number> }[] = [];
  try {
    for (const [i, c] of w.concurrencies.entries()) {
      http.push(
        await loadWithCpu(stack.pids(), {
          url: `${stack.baseUrl}/v1/chat/completions`,
          body,
          connections: c,
          durationS: w.durationS,
          warmupS: w.warmupS,
          warmupRequests: warmup(i),
        }),
      );
    }
  } finally {
    await stack.stop();
  }
  let llama: LoadResult[] | undefined;
  if (ctx.llamaServerBin !== undefined) {
    ctx.log(`throughput/${w.key}: llama-server`);
    const server = await startLlamaServer({
      binary: ctx.llamaServerBin,
      modelPath: w.model.path,
      slots,
      ctxPerSlot: ctxSize,
      threads,
      logDir: ctx.tmpDir,
      label: w.key,
    });
    llama = [];
    const llamaBody = { ...body, logit_bias: await byteTokenBias(w.model.path) };
    try {
      for (const [i, c] of w.concurrencies.entries()) {
        const url = `${server.baseUrl}/v1/chat/completions`;
        await runLoad({ url, body: llamaBody, connections: c, durationS: w.warmupS, warmupRequests: warmup(i) });
        llama.push(
          await runLoad({ url: `${server.baseUrl}/v1/chat/completions`, body: llamaBody, connections: c, durationS: w.durationS }),
        );
      }
    } finally {
      await server.stop();
    }
  }
  return w.concurrencies.map((c, i) => ({
    c,
    direct: direct[i]!,
    stack: http[i]!.result,
    stackCpuMsPerRequest: http[i]!.cpuMsPerRequest,
    ...(llama === undefined ? {} : { llama: llama[i]! }),
  }));
}

/** The concurrencies at which one-token throughput is judged against llama-server (the issue's). */
const ONE_TOKEN_TARGET_CONCURRENCY = [1, 8, 32];

function errorsOf(r: LoadResult | undefined): number {
  return r === undefined ? 0 : r.errors + r.non2xx;
}

/** Runs the throughput scenario. */
export async function throughputScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const quick = ctx.quick;
  const oneToken: Workload = {
    key: "oneToken",
    model: ctx.models.tiny,
    maxTokens: 1,
    ignoreEos: false,
    concurrencies: quick ? [1, 32] : [1, 8, 32, 64],
    durationS: quick ? 3 : 10,
    warmupS: quick ? 1 : 2,
    steady: true,
  };
  const decode: Workload = {
    key: "decode",
    model: quick ? ctx.models.tiny : ctx.models.bench,
    maxTokens: quick ? 128 : 64,
    ignoreEos: true,
    concurrencies: quick ? [1, 4] : [1, 4, 8],
    durationS: quick ? 3 : 12,
    warmupS: quick ? 1 : 2,
    steady: false,
  };
  const one = await runWorkload(ctx, oneToken);
  const dec = await runWorkload(ctx, decode);
  const withLlama = ctx.llamaServerBin !== undefined;

  const oneRows = one.map((r) => [
    r.c,
    fmt(r.direct.rps, 0),
    `**${fmt(r.stack.rps, 0)}**`,
    withLlama ? fmt(r.llama?.rps, 0) : "–",
    ratio(r.stack.rps, r.direct.rps),
    withLlama ? ratio(r.stack.rps, r.llama?.rps) : "–",
    `${fmt(r.stack.latencyMs.p50, 2)} / ${fmt(r.stack.latencyMs.p99, 2)}`,
    withLlama ? `${fmt(r.llama?.latencyMs.p50, 2)} / ${fmt(r.llama?.latencyMs.p99, 2)}` : "–",
    `${r.direct.errors} / ${errorsOf(r.stack)}${withLlama ? ` / ${errorsOf(r.llama)}` : ""}`,
  ]);
  const decRows = dec.map((r) => [
    r.c,
    fmt(r.direct.tokensPerS, 1),
    `**${fmt(r.stack.tokensPerS, 1)}**`,
    withLlama ? fmt(r.llama?.tokensPerS, 1) : "–",
    ratio(r.stack.tokensPerS, r.direct.tokensPerS),
    withLlama ? ratio(r.stack.tokensPerS, r.llama?.tokensPerS) : "–",
    `${fmt(r.direct.rps, 2)} / ${fmt(r.stack.rps, 2)}`,
    `${fmt(r.stack.latencyMs.p50, 0)} / ${fmt(r.stack.latencyMs.p99, 0)}`,
    `${r.direct.errors} / ${errorsOf(r.stack)}${withLlama ? ` / ${errorsOf(r.llama)}` : ""}`,
  ]);

  // The issue's points: c=1, 8 and 32, every one at least llama-server's rate, with zero errors on either side.
  const judged = one.filter((r) => ONE_TOKEN_TARGET_CONCURRENCY.includes(r.c));
  const oneTokenMet = (r: (typeof one)[number]) =>
    r.llama !== undefined && r.stack.rps >= r.llama.rps && errorsOf(r.stack) === 0 && errorsOf(r.llama) === 0;
  const decodeRatios = dec.map((r) => r.stack.tokensPerS / r.direct.tokensPerS);
  const minDecode = Math.min(...decodeRatios);
  const minDecodeAt = dec[decodeRatios.indexOf(minDecode)]!.c;
  const targets: Target[] = [
    {
      scenario: "throughput",
      target: `one-token requests/s at concurrency ${ONE_TOKEN_TARGET_CONCURRENCY.join(", ")} ≥ 1.0× llama-server, zero errors (tiny model)`,
      met: withLlama && judged.length === ONE_TOKEN_TARGET_CONCURRENCY.length ? judged.every(oneTokenMet) : null,
      detail: withLlama
        ? judged
            .map(
              (r) =>
                `c=${r.c}: ${fmt(r.stack.rps, 0)} vs ${fmt(r.llama?.rps, 0)} req/s (${ratio(r.stack.rps, r.llama?.rps)}; errors ${errorsOf(r.stack)} / ${errorsOf(r.llama)})`,
            )
            .join("; ")
        : `not measured in this run (llama-server was not in it: \`--with-llama-server\` or LLAMA_SERVER_BIN); the stack serves ${judged.map((r) => `${fmt(r.stack.rps, 0)} req/s at c=${r.c}`).join(", ")}.`,
    },
    {
      scenario: "throughput",
      target: `decode tokens/s ≥ 0.95× the engine (${decode.model.preset} model)`,
      met: minDecode >= 0.95,
      detail: `stack ÷ engine is ${dec.map((r, i) => `${decodeRatios[i]!.toFixed(2)}× at c=${r.c}`).join(", ")}; lowest ${minDecode.toFixed(2)}× at c=${minDecodeAt}.`,
    },
    {
      scenario: "throughput",
      target: `decode tokens/s ≥ 1.0× llama-server (${decode.model.preset} model)`,
      met: withLlama ? dec.every((r) => r.llama !== undefined && r.stack.tokensPerS >= r.llama.tokensPerS) : null,
      detail: withLlama
        ? dec.map((r) => `${ratio(r.stack.tokensPerS, r.llama?.tokensPerS)} at c=${r.c}`).join(", ")
        : "not measured in this run (llama-server was not in it: `--with-llama-server` or LLAMA_SERVER_BIN).",
    },
  ];

  const markdown = [
    `**One-token chat requests** (tiny model, \`max_tokens: 1\`, ${oneToken.durationS} s per point after a ${oneToken.warmupS} s warm-up; each system's first point — stack, in-process engine, llama-server — after ${steadyWarmup(quick, 0).toLocaleString("en-US")} discarded requests more, see \`STEADY_WARMUP_REQUESTS\` in bench/lib/load.ts). ${withLlama ? "llama-server was measured in this run, right after the stack, with the same model, slots, context and threads; its requests ban the model's 128 raw high-byte tokens (`logit_bias`), whose invalid UTF-8 makes llama-server's chat output parser fail the request, so both sides generate the same number of tokens." : "llama-server was not in this run (`npm run bench -- --with-llama-server` builds and adds it): its columns are not measured."}`,
    "",
    table(
      [
        "concurrency",
        "engine req/s",
        "stack req/s",
        "llama-server req/s",
        "stack ÷ engine",
        "stack ÷ llama-server",
        "stack p50 / p99 ms",
        "llama-server p50 / p99 ms",
        `errors engine / stack${withLlama ? " / llama" : ""}`,
      ],
      oneRows,
    ),
    "",
    `**Decode** (concurrency up to 2× the ${ctx.settings.slots} slots: beyond that requests only queue, and each point's tail of long requests costs minutes; ${decode.model.preset} model, ${decode.model.parameters?.toLocaleString("en-US") ?? "?"} parameters, \`max_tokens: ${decode.maxTokens}\` with \`ignore_eos\`, ${decode.durationS} s per point). Tokens/s counts generated tokens of completed requests.`,
    "",
    table(
      [
        "concurrency",
        "engine tok/s",
        "stack tok/s",
        "llama-server tok/s",
        "stack ÷ engine",
        "stack ÷ llama-server",
        "req/s engine / stack",
        "stack latency p50 / p99 ms",
        `errors engine / stack${withLlama ? " / llama" : ""}`,
      ],
      decRows,
    ),
    "",
    "CPU ms per request of each stack process (one-token workload):",
    "",
    table(
      ["concurrency", ...Object.keys(one[0]?.stackCpuMsPerRequest ?? {})],
      one.map((r) => [r.c, ...Object.values(r.stackCpuMsPerRequest).map((v) => fmt(v, 3))]),
    ),
  ].join("\n");

  const slim = (r: LoadResult | undefined) =>
    r && { ...r, latencyMs: roundSummary(r.latencyMs), engineMs: undefined, overheadMs: undefined };
  const slimDirect = (d: DirectResult) => ({ ...d, latencyMs: roundSummary(d.latencyMs), engineMs: roundSummary(d.engineMs) });
  return {
    name: "throughput",
    title: "2. Throughput: engine, stack and llama-server",
    data: {
      oneToken: {
        workload: { ...oneToken, model: oneToken.model.id },
        rows: one.map((r) => ({
          c: r.c,
          direct: slimDirect(r.direct),
          stack: slim(r.stack),
          stackCpuMsPerRequest: r.stackCpuMsPerRequest,
          llama: slim(r.llama),
        })),
      },
      decode: {
        workload: { ...decode, model: decode.model.id },
        rows: dec.map((r) => ({
          c: r.c,
          direct: slimDirect(r.direct),
          stack: slim(r.stack),
          stackCpuMsPerRequest: r.stackCpuMsPerRequest,
          llama: slim(r.llama),
        })),
      },
    },
    markdown,
    targets,
    headlines: [
      { figure: "one-token req/s at c=1 / 8 / 32 / 64 (stack)", value: one.map((r) => fmt(r.stack.rps, 0)).join(" / ") },
      {
        figure: `one-token req/s, stack ÷ llama-server (c=${judged.map((r) => r.c).join("/")})`,
        value: withLlama ? judged.map((r) => ratio(r.stack.rps, r.llama?.rps)).join(" / ") : "not measured",
      },
      {
        figure: `decode tok/s on ${decode.model.preset}, stack ÷ engine (c=${dec.map((r) => r.c).join("/")})`,
        value: decodeRatios.map((x) => `${x.toFixed(2)}×`).join(" / "),
      },
    ],
  };
}
