/**
 * What each `llama_decode` gets when the worker's `Engine` decodes several slots at once:
 * `node --conditions=development --import tsx bench/tools/decode_batches.ts [concurrency] [seconds] [context per slot]`.
 *
 * Loads the bench model (generated into the system temp folder by `npm run bench`) into the
 * inference worker's `Engine` (4 slots, 2048 tokens each unless told, 1 thread), runs `concurrency` closed
 * loops of 64-token generations with `ignore_eos` for `seconds` (after 3 s of warm-up), and
 * prints tokens/s, how many sequences each decode held (a sequence's item is one token while it
 * generates, more while its prompt is evaluated), and the mean time of a decode per order of
 * sequence ids in it. With the llama-server `bench/llama_server/build.sh` built (or
 * `LLAMA_SERVER_BIN`), the same load against it for comparison. docs/adr/0012-engine-builds.md
 * has a result. The counting wraps node-llama-cpp's internal `LlamaContext._ctx` (a diagnostic:
 * it may break with another node-llama-cpp version).
 *
 * @module
 */
import { existsSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { GenerateRequest } from "@atlas/contracts";
import { LlamaContext } from "node-llama-cpp";
import { Engine } from "../../services/inference-worker/src/engine.ts";
import { chatJob } from "../lib/direct.ts";
import { byteTokenBias, startLlamaServer } from "../lib/llama_server.ts";
import { MODEL_CACHE_DIR } from "../lib/models.ts";

const concurrency = Number(process.argv[2] ?? 4);
const seconds = Number(process.argv[3] ?? 8);
const ctxPerSlot = Number(process.argv[4] ?? 2048);
const modelPath = join(MODEL_CACHE_DIR, "atlas-demo-bench.gguf");
const job = chatJob([{ role: "user", content: "Tell me a story about the sea." }], 64, { ignore_eos: true });

/** Sequences per decode, and decode time by the order of the sequence ids in it. */
const perDecode = new Map<number, number>();
const byOrder = new Map<string, { n: number; ms: number }>();
let counting = false;

type Addon = Record<string | symbol, unknown>;
const proto = LlamaContext.prototype as unknown as { dispatchPendingBatch: () => void };
const dispatch = proto.dispatchPendingBatch;
const wrapped = new WeakSet<object>();
proto.dispatchPendingBatch = function (this: { _ctx: Addon }) {
  if (!wrapped.has(this)) {
    wrapped.add(this);
    const ctx = this._ctx;
    const ids: number[] = [];
    this._ctx = new Proxy(ctx, {
      get(target, p) {
        const v = target[p];
        if (typeof v !== "function") return v;
        if (p === "addToBatch") {
          return (...a: unknown[]) => {
            ids.push(a[0] as number);
            return v.apply(target, a);
          };
        }
        if (p === "decodeBatch") {
          return async (...a: unknown[]) => {
            const order = ids.join(",");
            ids.length = 0;
            const t0 = performance.now();
            const out = await v.apply(target, a);
            if (counting) {
              const sequences = order === "" ? 0 : order.split(",").length;
              perDecode.set(sequences, (perDecode.get(sequences) ?? 0) + 1);
              const s = byOrder.get(order) ?? { n: 0, ms: 0 };
              byOrder.set(order, { n: s.n + 1, ms: s.ms + performance.now() - t0 });
            }
            return out;
          };
        }
        return v.bind(target);
      },
    });
  }
  return dispatch.call(this);
};

/** Closed loops for `s` seconds: completion tokens per second. */
async function load(s: number, generate: () => Promise<number>): Promise<number> {
  let tokens = 0;
  const start = performance.now();
  const end = start + s * 1000;
  let last = start;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        tokens += await generate();
        last = performance.now();
      }
    }),
  );
  return tokens / ((last - start) / 1000);
}

const engine = await Engine.load({ modelPath, slots: 4, contextSize: ctxPerSlot, threads: 1, maxQueue: 1000 });
let seq = 0;
const viaEngine = async () => {
  const req = GenerateRequest.parse({ request_id: `d${seq++}`, model: "bench", ...job });
  return (await engine.generate(req, { signal: new AbortController().signal, onChunk: () => {} })).usage.completion_tokens;
};
await load(3, viaEngine);
counting = true;
const engineRate = await load(seconds, viaEngine);
counting = false;
await engine.dispose();
console.log(`engine, concurrency ${concurrency}: ${engineRate.toFixed(1)} tok/s`);
console.log(
  `  sequences per decode: ${[...perDecode]
    .sort((a, b) => a[0] - b[0])
    .map(([k, n]) => `${k}×${n}`)
    .join(", ")}`,
);
const orders = [...byOrder].sort((a, b) => b[1].n - a[1].n).slice(0, 8);
console.log(`  decode ms by sequence order: ${orders.map(([k, s]) => `[${k}] ${s.n}× ${(s.ms / s.n).toFixed(1)}`).join(", ")}`);

const bin = process.env.LLAMA_SERVER_BIN ?? join(homedir(), ".cache/atlas-bench/llama-server-v0.4.0-noamx/src/build/bin/llama-server");
if (existsSync(bin)) {
  const server = await startLlamaServer({
    binary: bin,
    modelPath,
    slots: 4,
    ctxPerSlot,
    threads: 1,
    logDir: tmpdir(),
    label: "decode-batches",
  });
  try {
    const body = JSON.stringify({
      model: "bench",
      messages: job.messages,
      max_tokens: 64,
      ignore_eos: true,
      logit_bias: await byteTokenBias(modelPath),
    });
    const viaServer = async () => {
      const r = await fetch(`${server.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      return ((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens;
    };
    await load(3, viaServer);
    console.log(`llama-server, concurrency ${concurrency}: ${(await load(seconds, viaServer)).toFixed(1)} tok/s`);
  } finally {
    await server.stop();
  }
} else console.log(`no llama-server at ${bin}: build it with bash bench/llama_server/build.sh`);
