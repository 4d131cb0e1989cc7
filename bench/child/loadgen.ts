/**
 * The HTTP load generator, run as its own process (forked by `bench/lib/load.ts`): autocannon's
 * programmatic API with per-response latencies kept raw (autocannon's own histogram rounds to
 * whole milliseconds, too coarse for sub-millisecond overhead), and each 2xx body parsed for
 * its token counts and, when the request carried `atlas`, the engine's own timings.
 *
 * Protocol: the parent sends `{type: "run", spec}`; this process answers `{type: "result", result}`
 * and exits.
 *
 * @module
 */
import autocannon from "autocannon";
import { cpuPerRequest, cpuSnapshot } from "../lib/context.ts";
import type { LoadResult, LoadSpec } from "../lib/load.ts";
import { summarize } from "../lib/stats.ts";

interface Parsed {
  completion: number;
  prompt: number;
  cached: number;
  /** queue + ttft + generation as the worker measured it, when the body has `atlas.timings`. */
  engineMs?: number;
}

function parseBody(body: string): Parsed | undefined {
  try {
    const j = JSON.parse(body) as {
      usage?: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } };
      timings?: { predicted_n?: number; prompt_n?: number; cache_n?: number };
      atlas?: { timings?: { queue_ms?: number; ttft_ms?: number; generation_ms?: number } };
    };
    const t = j.atlas?.timings;
    return {
      completion: j.usage?.completion_tokens ?? 0,
      prompt: j.usage?.prompt_tokens ?? 0,
      cached: j.usage?.prompt_tokens_details?.cached_tokens ?? j.timings?.cache_n ?? 0,
      ...(t === undefined ? {} : { engineMs: (t.queue_ms ?? 0) + (t.ttft_ms ?? 0) + (t.generation_ms ?? 0) }),
    };
  } catch {
    return undefined;
  }
}

/**
 * One run of exactly `amount` requests. A run bounded by count rather than by time ends with no
 * request in flight: autocannon's duration mode destroys the connections of requests still
 * running, and ATLAS then holds the leases of requests that were waiting for a slot until they
 * expire (30 s), which would stall the next run (see docs/benchmarks.md).
 */
async function once(
  spec: LoadSpec,
  amount: number | "duration",
  record: boolean,
  phase: string,
): Promise<LoadResult & { elapsedS: number }> {
  const latencies: number[] = [];
  const engine: number[] = [];
  const overhead: number[] = [];
  const statuses: Record<string, number> = {};
  const errorSamples: string[] = [];
  let completion = 0;
  let prompt = 0;
  let cached = 0;
  let last: { status: number; parsed: Parsed | undefined } | undefined;
  const body = typeof spec.body === "string" ? spec.body : JSON.stringify(spec.body);
  const sessions = spec.sessions;
  let sent = 0;
  const setupRequest =
    sessions === undefined
      ? undefined
      : (req: autocannon.Request): autocannon.Request => {
          const base = spec.body as { atlas?: Record<string, unknown> };
          const session_id = `${sessions.prefix}-${phase}-${Math.floor(sent++ / sessions.turns)}`;
          return { ...req, body: JSON.stringify({ ...base, atlas: { ...base.atlas, session_id } }) };
        };
  const started = performance.now();
  let lastResponseAt = started;
  // Without a callback, autocannon returns its tracker (an event emitter) made thenable.
  const instance = autocannon({
    url: spec.url,
    method: "POST",
    headers: { "content-type": "application/json", ...spec.headers },
    body,
    connections: spec.connections,
    ...(amount === "duration" ? { duration: spec.durationS } : { amount: Math.max(amount, spec.connections) }),
    sampleInt: 100,
    timeout: spec.timeoutS ?? 30,
    requests: [
      {
        ...(setupRequest === undefined ? {} : { setupRequest }),
        onResponse: (status: number, text: string) => {
          const parsed = status >= 200 && status < 300 ? parseBody(text) : undefined;
          if (status >= 300 && errorSamples.length < 5 && !errorSamples.includes(text.slice(0, 300))) errorSamples.push(text.slice(0, 300));
          last = { status, parsed };
        },
      },
    ],
  }) as unknown as autocannon.Instance & PromiseLike<autocannon.Result>;
  // autocannon emits "response" right after the request's onResponse, in the same tick.
  instance.on("response", (_client: unknown, status: number, _bytes: number, ms: number) => {
    lastResponseAt = performance.now();
    statuses[status] = (statuses[status] ?? 0) + 1;
    if (!record) return;
    const p = last?.parsed;
    last = undefined;
    if (status < 200 || status >= 300) return;
    latencies.push(ms);
    if (p !== undefined) {
      completion += p.completion;
      prompt += p.prompt;
      cached += p.cached;
      if (p.engineMs !== undefined) {
        engine.push(p.engineMs);
        overhead.push(ms - p.engineMs);
      }
    }
  });
  const result = await instance;
  // autocannon notices that its clients are done only at its next sample tick (sampleInt), so
  // the run ends at its last response, not when the promise settles.
  const elapsedS = (lastResponseAt - started) / 1000;
  const durationS = elapsedS;
  const ok = latencies.length;
  const non2xx = Object.entries(statuses)
    .filter(([s]) => Number(s) < 200 || Number(s) >= 300)
    .reduce((a, [, n]) => a + n, 0);
  const lat = summarize(latencies);
  return {
    connections: spec.connections,
    durationS,
    elapsedS,
    requests: ok,
    non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statuses,
    errorSamples,
    rps: ok / durationS,
    latencyMs: lat,
    completionTokens: completion,
    promptTokens: prompt,
    cachedTokens: cached,
    tokensPerS: completion / durationS,
    ...(engine.length === 0 ? {} : { engineMs: summarize(engine), overheadMs: summarize(overhead) }),
  };
}

process.on("message", (msg: { type: string; spec: LoadSpec }) => {
  if (msg.type !== "run") return;
  const { spec } = msg;
  void (async () => {
    try {
      if (spec.exactDuration === true) {
        const before = spec.cpuPids === undefined ? undefined : cpuSnapshot(spec.cpuPids);
        const { elapsedS: _e, ...measured } = await once(spec, "duration", true, "m");
        const result: LoadResult =
          before === undefined
            ? measured
            : { ...measured, cpuMsPerRequest: cpuPerRequest(before, cpuSnapshot(spec.cpuPids ?? {}), measured.requests) };
        process.send?.({ type: "result", result }, () => process.exit(0));
        return;
      }
      if (spec.amount !== undefined) {
        if ((spec.warmupAmount ?? 0) > 0) await once(spec, spec.warmupAmount ?? 0, false, "w");
        const before = spec.cpuPids === undefined ? undefined : cpuSnapshot(spec.cpuPids);
        const { elapsedS: _e, ...measured } = await once(spec, spec.amount, true, "m");
        const result: LoadResult =
          before === undefined
            ? measured
            : { ...measured, cpuMsPerRequest: cpuPerRequest(before, cpuSnapshot(spec.cpuPids ?? {}), measured.requests) };
        process.send?.({ type: "result", result }, () => process.exit(0));
        return;
      }
      // Calibrate the request count to the wanted duration: a short probe, the warm-up, then the run.
      const c = spec.connections;
      if ((spec.warmupRequests ?? 0) > 0) await once(spec, spec.warmupRequests ?? 0, false, "w");
      const probe = await once(spec, c * 3, false, "p");
      let rate = (c * 3) / probe.elapsedS;
      if ((spec.warmupS ?? 0) > 0) {
        const n = Math.max(c, Math.round(rate * (spec.warmupS ?? 0)));
        const warm = await once(spec, n, false, "w");
        rate = n / warm.elapsedS;
      }
      const before = spec.cpuPids === undefined ? undefined : cpuSnapshot(spec.cpuPids);
      const { elapsedS: _elapsed, ...measured } = await once(spec, Math.max(c, Math.round(rate * spec.durationS)), true, "m");
      const result: LoadResult =
        before === undefined
          ? measured
          : { ...measured, cpuMsPerRequest: cpuPerRequest(before, cpuSnapshot(spec.cpuPids ?? {}), measured.requests) };
      process.send?.({ type: "result", result }, () => process.exit(0));
    } catch (err) {
      process.send?.({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.exit(1));
    }
  })();
});
