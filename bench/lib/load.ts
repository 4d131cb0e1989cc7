/**
 * Runs a child process of the benchmark (`bench/child/*.ts`) and waits for its one result:
 * the HTTP load generator, the in-process engine baseline, the sessions client.
 *
 * @module
 */
import { resolve } from "node:path";
import { forkTracked, whenExited } from "./proc.ts";
import { REPO_ROOT, TSX_NODE_ARGS } from "./stack.ts";
import type { Summary } from "./stats.ts";

/** What the load generator is asked to do. */
export interface LoadSpec {
  url: string;
  body: unknown;
  connections: number;
  /**
   * Wanted length of the run. Runs are bounded by request count (so none is cut in flight): the
   * count is calibrated from a short probe and the warm-up, so the real length is close to this.
   */
  durationS: number;
  /** A discarded run first, same settings. */
  warmupS?: number;
  /**
   * Discarded requests first, same settings, before the calibration probe and `warmupS`: brings a
   * fresh process to its steady state ({@link STEADY_WARMUP_REQUESTS}).
   */
  warmupRequests?: number;
  /**
   * Run for exactly `durationS` (autocannon's duration mode, no calibration) and cut what is in
   * flight at the end: for a stack's last run only (the soak), as cut requests leave leases behind.
   */
  exactDuration?: boolean;
  timeoutS?: number;
  headers?: Record<string, string>;
  /** Processes whose CPU time per request to measure over the measured run (not the warm-up). */
  cpuPids?: Record<string, number>;
  /** Run exactly this many measured requests instead of calibrating a count to `durationS`. */
  amount?: number;
  /** With `amount`: this many discarded requests first (instead of `warmupS`). */
  warmupAmount?: number;
  /**
   * Sessions: request n (in send order) carries `atlas.session_id` `<prefix>-<phase>-<⌊n / turns⌋>`,
   * so at concurrency 1 each session gets `turns` consecutive turns (phase: `w` warm-up, `m`
   * measured, `p` calibration probe). The body must be an object.
   */
  sessions?: { prefix: string; turns: number };
}

/**
 * Requests every system gets before its first measured point, the same count for each: the
 * stack, the in-process engine and llama-server alike. V8 compiles the request path's code in
 * tiers as it runs; measured on this machine, the in-process engine's CPU per one-token request
 * fell from 1.2 to 0.55 ms over its first 6,000 requests and the stack's (all processes) from
 * about 6 to 2.6 ms over its first ~6,000, while a 2 s warm-up at concurrency 1 is a few hundred
 * stack requests. llama-server (C++) has nothing to warm; it gets them all the same.
 */
export const STEADY_WARMUP_REQUESTS = 6000;

/** The warm-up by count of a system's point `index` (0: its first, on a fresh process): {@link STEADY_WARMUP_REQUESTS}, 500 in a quick run. */
export function steadyWarmup(quick: boolean, index: number): number {
  return index > 0 ? 0 : quick ? 500 : STEADY_WARMUP_REQUESTS;
}

/** What one load run measured. Latencies in ms, client side. */
export interface LoadResult {
  connections: number;
  /** Real length of the measured run, s. */
  durationS: number;
  /** 2xx responses. */
  requests: number;
  non2xx: number;
  /** Connection errors (autocannon's count, timeouts included). */
  errors: number;
  timeouts: number;
  statuses: Record<string, number>;
  errorSamples: string[];
  rps: number;
  latencyMs: Summary;
  completionTokens: number;
  promptTokens: number;
  cachedTokens: number;
  tokensPerS: number;
  /** From `atlas.timings`, when the request carried `atlas`: the worker's queue + ttft + generation. */
  engineMs?: Summary;
  /** Client latency − engine time, per request. */
  overheadMs?: Summary;
  /** CPU ms per request of each process in `cpuPids`, over the measured run. */
  cpuMsPerRequest?: Record<string, number>;
}

/** Forks `bench/child/<name>.ts`, sends it `message` and resolves with its `result`. */
export async function runChild<T>(
  name: string,
  message: Record<string, unknown>,
  options: { timeoutMs?: number; cpuProfileDir?: string } = {},
): Promise<T> {
  const execArgv = [...TSX_NODE_ARGS];
  const child = forkTracked(resolve(REPO_ROOT, "bench", "child", `${name}.ts`), [], {
    cwd: REPO_ROOT,
    execArgv,
    env: { ...process.env, NODE_OPTIONS: "" },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const timeoutMs = options.timeoutMs ?? 30 * 60_000;
  try {
    return await new Promise<T>((resolveResult, reject) => {
      const timer = setTimeout(() => reject(new Error(`bench child ${name} timed out after ${timeoutMs} ms`)), timeoutMs);
      child.on("message", (msg: { type: string; result?: T; message?: string }) => {
        if (msg.type === "result") {
          clearTimeout(timer);
          resolveResult(msg.result as T);
        } else if (msg.type === "error") {
          clearTimeout(timer);
          reject(new Error(`bench child ${name} failed: ${msg.message}`));
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`bench child ${name} exited (code ${code}) without a result`));
      });
      child.send(message);
    });
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      setTimeout(() => child.kill("SIGKILL"), 5000).unref();
      await whenExited(child);
    }
  }
}

/** Runs the HTTP load generator once. */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return runChild<LoadResult>("loadgen", { type: "run", spec });
}

/** A load run that also measures each process's CPU time per request over the measured part. */
export async function loadWithCpu(
  pids: Record<string, number>,
  spec: LoadSpec,
): Promise<{ result: LoadResult; cpuMsPerRequest: Record<string, number> }> {
  const result = await runLoad({ ...spec, cpuPids: pids });
  return { result, cpuMsPerRequest: result.cpuMsPerRequest ?? {} };
}
