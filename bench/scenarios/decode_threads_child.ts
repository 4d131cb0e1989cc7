/**
 * The decode-threads scenario's child process: loads the worker's `Engine` with one llama.cpp
 * binary (`prebuilt` or `source`) and thread count (one `Llama` per process: two binaries of
 * llama.cpp are never loaded side by side), then times single-sequence decode.
 *
 * Protocol (bench/lib/load.ts `runChild`): `{type: "run", spec: DecodeSpec}` →
 * `{type: "result", result: DecodeResult}`.
 *
 * @module
 */
import { loadavg } from "node:os";
import { GenerateRequest } from "@atlas/contracts";
import { Engine } from "../../services/inference-worker/src/engine.ts";
import { chatJob } from "../lib/direct.ts";

/** One measurement: a binary and a thread count. */
export interface DecodeSpec {
  modelPath: string;
  binary: "prebuilt" | "source";
  threads: number;
  /** Tokens generated per run (`ignore_eos`). */
  maxTokens: number;
  /** Measured runs (after one discarded warm-up run). */
  runs: number;
}

/** What it measured: decode tokens/s of each run (tokens after the first / time after the first). */
export interface DecodeResult {
  binary: "prebuilt" | "source";
  openmp: boolean;
  threads: number;
  release: string;
  tokensPerS: number[];
  completionTokens: number;
  /** Prompt evaluation (time to first token), ms, per run. */
  ttftMs: number[];
  /** The machine's 1-minute load average before and after the runs (other processes share the cores). */
  load1: [number, number];
}

async function measure(spec: DecodeSpec): Promise<DecodeResult> {
  await using engine = await Engine.load({
    modelPath: spec.modelPath,
    slots: 1,
    contextSize: 512,
    threads: spec.threads,
    binary: spec.binary,
  });
  const { backend } = engine.info;
  // Never label one binary's figures with the other's name.
  if (backend.binary !== spec.binary) throw new Error(`asked for the ${spec.binary} binary, the engine loaded the ${backend.binary} one`);
  const tokensPerS: number[] = [];
  const ttftMs: number[] = [];
  let completionTokens = 0;
  const loadBefore = loadavg()[0]!;
  for (let i = 0; i <= spec.runs; i++) {
    const request = GenerateRequest.parse({
      request_id: `decode-${i}`,
      model: "bench",
      // A fresh prompt per run: no cached prefix, so every run evaluates the same prompt length.
      ...chatJob([{ role: "user", content: `Run ${i}: write a long story.` }], spec.maxTokens, { ignore_eos: true, temperature: 0 }),
    });
    const end = await engine.generate(request, { signal: new AbortController().signal, onChunk: () => {} });
    if (i === 0) continue; // warm-up
    completionTokens = end.usage.completion_tokens;
    tokensPerS.push(((end.usage.completion_tokens - 1) * 1000) / end.timings.generation_ms);
    ttftMs.push(end.timings.ttft_ms);
  }
  return {
    binary: backend.binary,
    openmp: backend.openmp,
    threads: spec.threads,
    release: backend.release,
    tokensPerS,
    completionTokens,
    ttftMs,
    load1: [loadBefore, loadavg()[0]!],
  };
}

process.on("message", (msg: { type: string; spec: DecodeSpec }) => {
  if (msg.type !== "run") return;
  void measure(msg.spec).then(
    (result) => process.send?.({ type: "result", result }, () => process.exit(0)),
    (err: unknown) =>
      process.send?.({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.exit(1)),
  );
});
