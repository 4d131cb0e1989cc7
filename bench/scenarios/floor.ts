/**
 * The floor of the architecture: how much of the stack's added latency and CPU the parts it is
 * built from cost by themselves, with no ATLAS code at all (`bench/child/floor.ts`). Measured in
 * the same run, with the same load generator and request body, at concurrency 1:
 *
 * - the in-process engine (the overhead scenario's baseline);
 * - the full stack;
 * - **HTTP only**: fastify parses the body and answers a fixed completion;
 * - **HTTP + one NATS hop**: the same, after one request/reply to a responder process over a
 *   real nats-server — the common case's shape (api → worker → api) doing no work.
 *
 * A stack request can be no faster than the engine plus the last of these, so "added latency"
 * cannot go below that floor's latency, and "CPU per request" cannot go below the floor's CPU
 * plus the engine's. The difference between the stack and the floor is what ATLAS's own code
 * (validation, placement, leases, sessions, metrics, logging) costs.
 *
 * @module
 */
import type { ChildProcess } from "node:child_process";
import { join, resolve } from "node:path";
import { startNatsServer } from "@atlas/testing";
import type { FloorSpec } from "../child/floor.ts";
import { type BenchContext, type ScenarioResult, table } from "../lib/context.ts";
import { chatJob, runDirect } from "../lib/direct.ts";
import { type LoadResult, loadWithCpu, steadyWarmup } from "../lib/load.ts";
import { askChild, forkTracked, whenExited } from "../lib/proc.ts";
import { REPO_ROOT, startBenchStack, TSX_NODE_ARGS } from "../lib/stack.ts";
import { fmt } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];
const SUBJECT = "floor.echo";

interface Row {
  name: string;
  result: LoadResult;
  cpu: Record<string, number>;
}

const total = (cpu: Record<string, number>) => Object.values(cpu).reduce((s, v) => s + (Number.isFinite(v) ? v : 0), 0);

async function startFloorChild(spec: FloorSpec): Promise<{ child: ChildProcess; port: number | undefined }> {
  const child = forkTracked(resolve(REPO_ROOT, "bench", "child", "floor.ts"), [], {
    cwd: REPO_ROOT,
    execArgv: [...TSX_NODE_ARGS],
    env: { ...process.env, NODE_OPTIONS: "" },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const ready = (await askChild(child, { type: "start", spec }, "ready", 60_000)) as { port?: number } | undefined;
  return { child, port: ready?.port };
}

async function stopFloorChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.send({ type: "stop" });
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  }
  await whenExited(child);
}

/** Runs the floor scenario. */
export async function floorScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const { slots, ctxSize, threads } = ctx.settings;
  const durationS = ctx.quick ? 4 : 10;
  const warmupS = ctx.quick ? 1 : 2;
  const body = { model: tiny.id, messages: MESSAGES, max_tokens: 1, atlas: {} };
  const load = (pids: Record<string, number>, url: string) =>
    loadWithCpu(pids, {
      url: `${url}/v1/chat/completions`,
      body,
      connections: 1,
      durationS,
      warmupS,
      warmupRequests: steadyWarmup(ctx.quick, 0),
    });

  ctx.log(`floor: in-process engine, full stack, HTTP only, HTTP + one NATS hop; c=1, ${durationS} s each`);
  const [direct] = await runDirect({ modelPath: tiny.path, slots, ctxSize, threads }, [
    { model: tiny.id, connections: 1, durationS, warmupS, warmupRequests: steadyWarmup(ctx.quick, 0), request: chatJob(MESSAGES, 1) },
  ]);
  if (direct === undefined) throw new Error("floor: the in-process run gave no result");

  const rows: Row[] = [];
  const stack = await startBenchStack(ctx, "floor");
  try {
    const { result, cpuMsPerRequest } = await load(stack.pids(), stack.baseUrl);
    rows.push({ name: "full stack", result, cpu: cpuMsPerRequest });
  } finally {
    await stack.stop();
  }

  const nats = await startNatsServer({ storeDir: join(ctx.tmpDir, "floor-nats"), jetstream: false });
  const children: ChildProcess[] = [];
  try {
    const bare = await startFloorChild({ role: "http", natsUrl: nats.url, subject: SUBJECT });
    children.push(bare.child);
    const bareRun = await load({ http: bare.child.pid ?? 0 }, `http://127.0.0.1:${bare.port}`);
    rows.push({ name: "HTTP only (fastify, no work)", result: bareRun.result, cpu: bareRun.cpuMsPerRequest });
    await stopFloorChild(bare.child);

    const responder = await startFloorChild({ role: "responder", natsUrl: nats.url, subject: SUBJECT });
    children.push(responder.child);
    const hop = await startFloorChild({ role: "http", natsUrl: nats.url, subject: SUBJECT, hop: true });
    children.push(hop.child);
    const hopRun = await load(
      { "nats-server": nats.pid, http: hop.child.pid ?? 0, responder: responder.child.pid ?? 0 },
      `http://127.0.0.1:${hop.port}`,
    );
    rows.push({ name: "HTTP + one NATS request/reply (no work)", result: hopRun.result, cpu: hopRun.cpuMsPerRequest });
  } finally {
    for (const child of children.reverse()) await stopFloorChild(child);
    await nats.stop({ keepStore: false });
  }

  const stackRow = rows[0] as Row;
  const hopRow = rows[2] as Row;
  const stackAdded = {
    p50: stackRow.result.latencyMs.p50 - direct.latencyMs.p50,
    p95: stackRow.result.latencyMs.p95 - direct.latencyMs.p95,
  };
  const floorAdded = { p50: hopRow.result.latencyMs.p50, p95: hopRow.result.latencyMs.p95 };
  const stackCpu = total(stackRow.cpu);
  const floorCpu = total(hopRow.cpu);
  const errors = rows.reduce((s, r) => s + r.result.errors + r.result.non2xx, direct.errors);

  const markdown = [
    `One-token chat requests (the overhead scenario's body) at concurrency 1, ${durationS} s per run after a ${warmupS} s warm-up and ${steadyWarmup(ctx.quick, 0).toLocaleString("en-US")} discarded requests before that (each configuration alike, \`STEADY_WARMUP_REQUESTS\` in bench/lib/load.ts), all in this run. The floor runs the parts the stack is built from — fastify, the NATS client the services use, nats-server — with no ATLAS code (\`bench/child/floor.ts\`). Latencies in ms, client side; CPU in ms per request, every process of the run (\`/proc/<pid>/stat\`).`,
    "",
    table(
      ["configuration", "p50 / p95 / p99", "req/s", "CPU per request (all processes)", "per process"],
      [
        [
          "engine in-process (no HTTP)",
          `${fmt(direct.latencyMs.p50, 3)} / ${fmt(direct.latencyMs.p95, 3)} / ${fmt(direct.latencyMs.p99, 3)}`,
          fmt(direct.rps, 0),
          "–",
          "–",
        ],
        ...rows.map((r) => [
          r.name,
          `${fmt(r.result.latencyMs.p50, 3)} / ${fmt(r.result.latencyMs.p95, 3)} / ${fmt(r.result.latencyMs.p99, 3)}`,
          fmt(r.result.rps, 0),
          fmt(total(r.cpu), 3),
          Object.entries(r.cpu)
            .map(([k, v]) => `${k} ${fmt(v, 3)}`)
            .join(", "),
        ]),
      ],
    ),
    "",
    `**Floor of the added latency** (HTTP + one hop, no work): p50 ${fmt(floorAdded.p50, 3)} ms, p95 ${fmt(floorAdded.p95, 3)} ms; the stack adds ${fmt(stackAdded.p50, 3)} / ${fmt(stackAdded.p95, 3)} ms over the engine, so ATLAS's own code costs about ${fmt(stackAdded.p50 - floorAdded.p50, 3)} ms at p50. **Floor of the CPU per request**: ${fmt(floorCpu, 3)} ms before any engine work; the stack spends ${fmt(stackCpu, 3)} ms including the engine.`,
  ].join("\n");

  return {
    name: "floor",
    title: "The floor: the stack's parts with no ATLAS code",
    data: { durationS, warmupS, direct, rows, stackAdded, floorAdded, stackCpu, floorCpu, errors },
    markdown,
    targets: [],
    headlines: [
      {
        figure: "floor of added latency (HTTP + one NATS hop, no work), c=1 p50 / p95 (ms)",
        value: `${fmt(floorAdded.p50, 2)} / ${fmt(floorAdded.p95, 2)}`,
      },
      { figure: "floor of CPU per request (no engine), c=1 (ms)", value: fmt(floorCpu, 2) },
    ],
  };
}
