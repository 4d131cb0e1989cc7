/**
 * The in-process engine baseline (`bench/child/direct.ts`), parent side.
 *
 * @module
 */
import type { GenerateRequest } from "@atlas/contracts";
import { runChild } from "./load.ts";
import type { Summary } from "./stats.ts";

/** How the engine is loaded: as the worker loads it. */
export interface DirectOptions {
  modelPath: string;
  slots: number;
  ctxSize: number;
  threads: number;
}

/** One closed-loop run. */
export interface DirectRun {
  model: string;
  connections: number;
  durationS: number;
  warmupS?: number;
  /** Discarded requests first (`STEADY_WARMUP_REQUESTS`, bench/lib/load.ts), before `warmupS`. */
  warmupRequests?: number;
  /** The request without `request_id` and `model`. */
  request: Omit<GenerateRequest, "request_id" | "model">;
}

/** What one run measured; latencies in ms around `engine.generate`. */
export interface DirectResult {
  connections: number;
  durationS: number;
  requests: number;
  errors: number;
  errorSamples: string[];
  rps: number;
  latencyMs: Summary;
  /** The engine's own queue + ttft + generation timings. */
  engineMs: Summary;
  completionTokens: number;
  promptTokens: number;
  cachedTokens: number;
  tokensPerS: number;
}

/** Loads the engine once in a child process and runs each spec in order. */
export function runDirect(options: DirectOptions, runs: DirectRun[]): Promise<DirectResult[]> {
  return runChild<DirectResult[]>("direct", { type: "run", options, runs });
}

/** The `GenerateRequest` fields the api sends for a chat body with only `messages` and `max_tokens` (and optionally `ignore_eos`, `temperature`). */
export function chatJob(
  messages: { role: "user" | "system" | "assistant"; content: string }[],
  maxTokens: number,
  extra: { ignore_eos?: boolean; temperature?: number; seed?: number } = {},
): DirectRun["request"] {
  // As services/api/src/openai/common.ts samplingOf resolves an OpenAI body's defaults.
  return {
    messages,
    sampling: {
      temperature: extra.temperature ?? 1,
      top_p: 1,
      ...(extra.seed === undefined ? {} : { seed: extra.seed }),
      presence_penalty: 0,
      frequency_penalty: 0,
      max_tokens: maxTokens,
      stop: [],
      ignore_eos: extra.ignore_eos ?? false,
    },
    response_format: { type: "text" },
  };
}
