/**
 * Decode threads: single-sequence decode tokens/s of the worker's engine at 1 and 2 threads, on
 * node-llama-cpp's prebuilt binary (no OpenMP) and on the source build `npm run build:engine`
 * makes (OpenMP), on the `bench` model. Each (binary, threads) runs in its own process: one
 * llama.cpp binary per process. The configurations take turns, round after round, so load from
 * other processes on the machine falls on all of them alike. Without a source build the scenario
 * says so and measures the prebuilt binary only. Opt-in (`npm run bench -- --scenarios decode-threads`): it is not part
 * of the default set. See docs/adr/0012-engine-builds.md.
 *
 * @module
 */
import { readSourceBuild } from "../../services/inference-worker/src/llama.ts";
import { type BenchContext, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { runChild } from "../lib/load.ts";
import { fmt, roundSummary, summarize } from "../lib/stats.ts";
import type { DecodeResult, DecodeSpec } from "./decode_threads_child.ts";

const THREADS = [1, 2];
/** The child lives next to this file; runChild resolves names under bench/child/. */
const CHILD = "../scenarios/decode_threads_child";

export async function decodeThreadsScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const model = ctx.models.bench;
  const maxTokens = ctx.quick ? 32 : 96;
  const rounds = ctx.quick ? 1 : 3;
  const runs = 2; // per configuration and round, after a warm-up run
  const build = readSourceBuild();
  const binaries: ("prebuilt" | "source")[] = build === undefined ? ["prebuilt"] : ["prebuilt", "source"];
  if (build === undefined) ctx.log("decode-threads: no source build (npm run build:engine): prebuilt binary only");
  else ctx.log(`decode-threads: source build ${build.folder} (${build.flavour}, built ${build.builtAt})`);

  const configs = binaries.flatMap((binary) => THREADS.map((threads) => ({ binary, threads })));
  const rawRounds: DecodeResult[][] = [];
  for (let round = 1; round <= rounds; round++) {
    const measured: DecodeResult[] = [];
    for (const { binary, threads } of configs) {
      ctx.log(
        `decode-threads: round ${round}/${rounds}: ${binary}, ${threads} thread(s), ${runs} runs of ${maxTokens} tokens on ${model.preset}`,
      );
      const spec: DecodeSpec = { modelPath: model.path, binary, threads, maxTokens, runs };
      measured.push(await runChild<DecodeResult>(CHILD, { type: "run", spec }));
    }
    rawRounds.push(measured);
  }
  // Every run of a configuration, all rounds together; load: the lowest and highest seen around its runs.
  const results: DecodeResult[] = configs.map((_, i) => {
    const all = rawRounds.map((r) => r[i]!);
    const loads = all.flatMap((r) => r.load1);
    return {
      ...all[0]!,
      tokensPerS: all.flatMap((r) => r.tokensPerS),
      ttftMs: all.flatMap((r) => r.ttftMs),
      load1: [Math.min(...loads), Math.max(...loads)],
    };
  });

  const median = (r: DecodeResult | undefined) => (r === undefined ? Number.NaN : summarize(r.tokensPerS).p50);
  const find = (binary: string, threads: number) => results.find((r) => r.binary === binary && r.threads === threads);
  const rows = results.map((r) => {
    const s = summarize(r.tokensPerS);
    const one = median(find(r.binary, 1));
    return [
      r.binary === "source" ? `source-built (${build?.flavour ?? "?"})` : "prebuilt",
      r.openmp ? "yes" : "no",
      r.threads,
      fmt(s.p50, 1),
      `${fmt(s.min, 1)}–${fmt(s.max, 1)}`,
      r.threads === 1 ? "1.00" : fmt(s.p50 / one, 2),
      `${fmt(r.load1[0], 1)}–${fmt(r.load1[1], 1)}`,
    ];
  });
  const source1 = median(find("source", 1));
  const source2 = median(find("source", 2));
  const prebuilt1 = median(find("prebuilt", 1));
  const prebuilt2 = median(find("prebuilt", 2));

  const targets: Target[] = [
    {
      scenario: "decode-threads",
      target: "With the source build (OpenMP), 2 threads decode at least as fast as 1",
      met: build === undefined ? null : source2 >= source1,
      detail:
        build === undefined
          ? "not measured: no source build here (npm run build:engine)"
          : `source-built: ${fmt(source1, 1)} tok/s at 1 thread, ${fmt(source2, 1)} at 2 (×${fmt(source2 / source1, 2)}); prebuilt: ${fmt(prebuilt1, 1)} and ${fmt(prebuilt2, 1)} (×${fmt(prebuilt2 / prebuilt1, 2)})`,
    },
  ];
  const headlines = [
    { figure: "decode tok/s, prebuilt, 1 / 2 threads", value: `${fmt(prebuilt1, 1)} / ${fmt(prebuilt2, 1)}` },
    {
      figure: "decode tok/s, source-built (OpenMP), 1 / 2 threads",
      value: build === undefined ? "no source build" : `${fmt(source1, 1)} / ${fmt(source2, 1)}`,
    },
  ];
  const markdown = [
    `Single-sequence decode on the \`${model.preset}\` model (${model.shape}, ${model.tensorType ?? "?"}): the worker's \`Engine\`, 1 slot, ${maxTokens} tokens per run with \`ignore_eos\`; each binary and thread count in its own process (a discarded warm-up run, then ${runs} measured), the configurations taking turns for ${rounds} round(s), so ${runs * rounds} runs each. Decode tokens/s = (tokens − 1) / time after the first token; the table shows the median run, the range, and the machine's 1-minute load average around the runs (other processes share the cores).`,
    "",
    table(["binary", "OpenMP", "threads", "decode tok/s (median)", "range", "vs 1 thread", "load avg"], rows, [
      "l",
      "l",
      "r",
      "r",
      "r",
      "r",
      "r",
    ]),
    "",
    build === undefined
      ? "**No source build on this machine**: only the prebuilt binary was measured. `npm run build:engine` (~10–16 min on 2 cores) builds llama.cpp with OpenMP; run this scenario again afterwards."
      : `Source build: \`${build.folder}\` (${build.flavour}, llama.cpp ${build.release}, built ${build.builtAt}).`,
  ].join("\n");

  return {
    name: "decode-threads",
    title: "Decode threads: prebuilt vs source-built llama.cpp",
    data: {
      model: model.preset,
      maxTokens,
      rounds,
      runs,
      sourceBuild: build ?? null,
      results: results.map((r) => ({ ...r, summary: roundSummary(summarize(r.tokensPerS), 2) })),
      perRound: rawRounds,
    },
    markdown,
    targets,
    headlines,
  };
}
