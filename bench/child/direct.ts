/**
 * The baseline: the same `Engine` the inference worker runs, called directly in this process
 * (no HTTP, no NATS, no scheduler), closed-loop at a given concurrency. Same model, slots,
 * context size and threads as the stack; the request is the `GenerateRequest` the api would send
 * for the same HTTP body.
 *
 * Protocol: `{type: "run", options, runs: DirectRun[]}` → `{type: "result", result: DirectResult[]}`.
 *
 * @module
 */
import { GenerateRequest } from "@atlas/contracts";
import { Engine } from "../../services/inference-worker/src/engine.ts";
import type { DirectOptions, DirectResult, DirectRun } from "../lib/direct.ts";
import { summarize } from "../lib/stats.ts";

/** A closed-loop run for `durationS`, or until `maxRequests` were sent (the warm-up by count). */
async function run(
  engine: Engine,
  spec: DirectRun,
  durationS: number,
  record: boolean,
  maxRequests = Number.POSITIVE_INFINITY,
): Promise<DirectResult> {
  const latencies: number[] = [];
  const engineMs: number[] = [];
  let completion = 0;
  let prompt = 0;
  let cached = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  let seq = 0;
  const started = performance.now();
  const endAt = started + durationS * 1000;
  let lastEnd = started;
  const loop = async () => {
    while (performance.now() < endAt && seq < maxRequests) {
      const req = GenerateRequest.parse({ request_id: `direct-${seq++}`, model: spec.model, ...spec.request });
      const t0 = performance.now();
      try {
        const end = await engine.generate(req, { signal: new AbortController().signal, onChunk: () => {} });
        lastEnd = performance.now();
        const ms = lastEnd - t0;
        if (!record) continue;
        latencies.push(ms);
        engineMs.push(end.timings.queue_ms + end.timings.ttft_ms + end.timings.generation_ms);
        completion += end.usage.completion_tokens;
        prompt += end.usage.prompt_tokens;
        cached += end.usage.cached_tokens;
      } catch (err) {
        errors++;
        const m = err instanceof Error ? err.message : String(err);
        if (errorSamples.length < 5 && !errorSamples.includes(m)) errorSamples.push(m);
      }
    }
  };
  await Promise.all(Array.from({ length: spec.connections }, loop));
  // Requests running at the deadline finish and count: the run lasts until the last one ends.
  const elapsedS = (lastEnd - started) / 1000;
  return {
    connections: spec.connections,
    durationS: elapsedS,
    requests: latencies.length,
    errors,
    errorSamples,
    rps: latencies.length / elapsedS,
    latencyMs: summarize(latencies),
    engineMs: summarize(engineMs),
    completionTokens: completion,
    promptTokens: prompt,
    cachedTokens: cached,
    tokensPerS: completion / elapsedS,
  };
}

process.on("message", (msg: { type: string; options: DirectOptions; runs: DirectRun[] }) => {
  if (msg.type !== "run") return;
  void (async () => {
    let engine: Engine | undefined;
    try {
      const o = msg.options;
      engine = await Engine.load({ modelPath: o.modelPath, slots: o.slots, contextSize: o.ctxSize, threads: o.threads, maxQueue: 100_000 });
      const results: DirectResult[] = [];
      for (const spec of msg.runs) {
        if ((spec.warmupRequests ?? 0) > 0) await run(engine, spec, Number.POSITIVE_INFINITY, false, spec.warmupRequests);
        if ((spec.warmupS ?? 0) > 0) await run(engine, spec, spec.warmupS ?? 0, false);
        results.push(await run(engine, spec, spec.durationS, true));
      }
      await engine.dispose();
      process.send?.({ type: "result", result: results }, () => process.exit(0));
    } catch (err) {
      await engine?.dispose().catch(() => {});
      process.send?.({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.exit(1));
    }
  })();
});
