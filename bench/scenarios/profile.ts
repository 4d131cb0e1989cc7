/**
 * Where the time goes on the request path: V8 CPU profiles (the sampling profiler behind
 * `node --cpu-prof`, started through `node:inspector` by `bench/probe/probe.ts` so the profile
 * covers the load window only) of the api, the scheduler and the worker under one-token load at
 * concurrency 1 (where the request path's targets are judged: each request's own cost, no
 * batching across requests), plus every process's CPU time per request from `/proc`.
 *
 * @module
 */
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type BenchContext, type ScenarioResult, table } from "../lib/context.ts";
import { loadWithCpu, runLoad, steadyWarmup } from "../lib/load.ts";
import { type FrameRow, type ProfileSummary, summarizeProfile } from "../lib/profile.ts";
import { REPO_ROOT, startBenchStack } from "../lib/stack.ts";
import { fmt } from "../lib/stats.ts";

const PROFILED = ["api", "scheduler", "worker-1"];
/** Concurrency of the profiled load. */
const CONNECTIONS = 1;

/** Buckets of self time, in order of matching. */
const CATEGORIES: { name: string; match: (f: FrameRow & { url: string }) => boolean }[] = [
  {
    name: "socket write syscalls (writeBuffer, writev, …)",
    match: (f) => f.where === "(native)" && /^(writeBuffer|writev|writeUtf8String|writeLatin1String)$/.test(f.frame),
  },
  {
    name: "NATS client: eager async-trace Error objects (RequestError, TimeoutError)",
    match: (f) => /nats-core/.test(f.where) && /^(RequestError|TimeoutError)$/.test(f.frame),
  },
  { name: "NATS client: other", match: (f) => f.where.startsWith("@nats-io/") },
  { name: "llama.cpp sampling/eval (node-llama-cpp native)", match: (f) => f.where === "(native)" && /^Addon/.test(f.frame) },
  { name: "node-llama-cpp JS", match: (f) => f.where === "node-llama-cpp" || f.where === "lifecycle-utils" },
  { name: "zod validation", match: (f) => f.where === "zod" },
  { name: "ATLAS bus (libs/bus)", match: (f) => f.where.startsWith("libs/bus/") },
  { name: "ATLAS service code", match: (f) => f.where.startsWith("services/") || f.where.startsWith("libs/") },
  {
    name: "fastify + Node HTTP",
    match: (f) =>
      /^(fastify|find-my-way|avvio|secure-json-parse|fast-json-stringify|@fastify\/.*|light-my-request)$/.test(f.where) ||
      /^node:_http/.test(f.where),
  },
  { name: "logging (pino)", match: (f) => /^pino/.test(f.where) },
  { name: "garbage collector", match: (f) => f.frame === "(garbage collector)" },
  { name: "other Node internals", match: (f) => f.where.startsWith("node:") },
  { name: "other (native, program)", match: () => true },
];

async function categorize(file: string): Promise<{ name: string; pct: number }[]> {
  const s = await summarizeProfile(file, 100_000);
  const out = new Map<string, number>();
  for (const f of s.topSelf) {
    const c = CATEGORIES.find((x) => x.match({ ...f, where: f.where.replace(/:\d+$/, ""), url: "" }))!;
    out.set(c.name, (out.get(c.name) ?? 0) + f.pct);
  }
  return [...out.entries()].map(([name, pct]) => ({ name, pct })).sort((a, b) => b.pct - a.pct);
}

/** Runs the profile. */
export async function profileScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const durationS = ctx.quick ? 4 : 10;
  ctx.log(`profile: api, scheduler and worker under one-token load at c=${CONNECTIONS} for ${durationS} s`);
  const stack = await startBenchStack(ctx, "profile", {
    probe: PROFILED,
  });
  const body = { model: tiny.id, messages: [{ role: "user", content: "Hello" }], max_tokens: 1 };
  let files: Record<string, string>;
  let load: Awaited<ReturnType<typeof loadWithCpu>>;
  try {
    const url = `${stack.baseUrl}/v1/chat/completions`;
    await runLoad({ url, body, connections: CONNECTIONS, durationS: ctx.quick ? 1 : 3, warmupRequests: steadyWarmup(ctx.quick, 0) });
    await stack.startProfile(1000);
    load = await loadWithCpu(stack.pids(), { url, body, connections: CONNECTIONS, durationS });
    files = await stack.stopProfile(join(ctx.tmpDir, "profiles"));
  } finally {
    await stack.stop();
  }
  const summaries: Record<string, ProfileSummary> = {};
  const categories: Record<string, { name: string; pct: number }[]> = {};
  for (const label of PROFILED) {
    const f = files[label];
    if (f === undefined) continue;
    summaries[label] = await summarizeProfile(f, 15);
    categories[label] = await categorize(f);
  }
  // Keep the api's profile next to the results (git-ignored) for a look in Chrome DevTools.
  const keep = join(REPO_ROOT, "bench", "results", "profiles");
  await mkdir(keep, { recursive: true });
  for (const [label, f] of Object.entries(files)) await copyFile(f, join(keep, `${label}.cpuprofile`));

  const r = load.result;
  const cpu = load.cpuMsPerRequest;
  const cpuTotal = Object.values(cpu).reduce((s, v) => s + (Number.isFinite(v) ? v : 0), 0);
  const api = summaries.api;
  const apiCats = categories.api ?? [];
  const catNames = [...new Set(PROFILED.flatMap((l) => (categories[l] ?? []).map((c) => c.name)))];
  const catPct = (label: string, name: string) => categories[label]?.find((c) => c.name === name)?.pct;
  const busyPerReq = (label: string) => (summaries[label] === undefined ? Number.NaN : summaries[label]!.busyMs / r.requests);
  const markdown = [
    `One-token requests at concurrency ${CONNECTIONS} on the tiny model for ${durationS} s: ${r.requests.toLocaleString("en-US")} requests, ${fmt(r.rps, 0)} req/s, p50 ${fmt(r.latencyMs.p50, 1)} ms, ${r.errors + r.non2xx} errors, after ${steadyWarmup(ctx.quick, 0).toLocaleString("en-US")} discarded requests (the profiler itself slows the run: it samples every millisecond, and at concurrency 1 each sample interrupts the request being served).`,
    "",
    `**CPU time per request** (ms, \`/proc/<pid>/stat\`): ${Object.entries(cpu)
      .map(([k, v]) => `${k} ${fmt(v, 3)}`)
      .join(
        ", ",
      )}; **all processes ${fmt(cpuTotal, 3)} ms** for a request whose engine work (one token from a cached prompt) takes ≈ 0.2 ms in-process. The load generator runs on the same 2 cores.`,
    "",
    "**Self time by category** (% of each process's busy time in the profile):",
    "",
    table(
      ["category", ...PROFILED.map((l) => `${l} %`)],
      catNames.map((n) => [n, ...PROFILED.map((l) => fmt(catPct(l, n), 1))]),
      ["l", ...PROFILED.map(() => "r" as const)],
    ),
    "",
    `Busy CPU per request in the profiles: ${PROFILED.map((l) => `${l} ${fmt(busyPerReq(l), 3)} ms`).join(", ")}; GC share: ${PROFILED.map((l) => `${l} ${fmt(summaries[l]?.gcPct, 1)}%`).join(", ")}.`,
    "",
    "**api: top functions by self time**",
    "",
    table(
      ["function", "where", "self ms", "% of busy"],
      (api?.topSelf ?? []).map((f) => [`\`${f.frame}\``, f.where, fmt(f.ms, 0), fmt(f.pct, 1)]),
      ["l", "l", "r", "r"],
    ),
    "",
    "**api: top functions by inclusive time**",
    "",
    table(
      ["function", "where", "total ms", "% of busy"],
      (api?.topInclusive ?? []).slice(0, 12).map((f) => [`\`${f.frame}\``, f.where, fmt(f.ms, 0), fmt(f.pct, 1)]),
      ["l", "l", "r", "r"],
    ),
    "",
    ...["scheduler", "worker-1"].flatMap((l) => [
      `**${l}: top functions by self time**`,
      "",
      table(
        ["function", "where", "self ms", "% of busy"],
        (summaries[l]?.topSelf ?? []).slice(0, 8).map((f) => [`\`${f.frame}\``, f.where, fmt(f.ms, 0), fmt(f.pct, 1)]),
        ["l", "l", "r", "r"],
      ),
      "",
    ]),
    "The profiles are kept in `bench/results/profiles/*.cpuprofile` (git-ignored); open them in Chrome DevTools → Performance.",
  ].join("\n");
  const top = apiCats[0];
  return {
    name: "profile",
    title: "Profile of the request path",
    data: { durationS, load: { ...r }, cpuMsPerRequest: cpu, cpuMsPerRequestTotal: cpuTotal, summaries, categories },
    markdown,
    targets: [],
    headlines: [
      { figure: `CPU per one-token request, all processes, c=${CONNECTIONS}, profiled (ms)`, value: fmt(cpuTotal, 2) },
      { figure: "api's biggest cost (self time)", value: top === undefined ? "–" : `${top.name}: ${fmt(top.pct, 1)}%` },
    ],
  };
}
