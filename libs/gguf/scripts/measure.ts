/**
 * Measures a generated model in node-llama-cpp on one thread: generation time, file size,
 * prompt and decode throughput, reply lengths at temperature 0 (the EOS tuning) and the logit
 * biases llama.cpp actually applies (the calibration of `eosBias` / `byteBias`).
 *
 *   node --import tsx libs/gguf/scripts/measure.ts [tiny|bench] ['{"eosBias": 1.2}']
 *
 * Prints JSON. Numbers vary by machine; nothing here is asserted in tests.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaChat, LlamaLogLevel } from "node-llama-cpp";
import type { ModelPreset, WriteLlamaModelOptions } from "../src/params.ts";
import { FIRST_BYTE_TOKEN_ID, FIRST_PIECE_TOKEN_ID, SpecialTokenId } from "../src/vocab.ts";
import { writeLlamaModel } from "../src/writer.ts";

const preset = (process.argv[2] ?? "tiny") as ModelPreset;
const overrides = JSON.parse(process.argv[3] ?? "{}") as WriteLlamaModelOptions;
const dir = await mkdtemp(join(tmpdir(), "atlas-gguf-measure-"));
const path = join(dir, `${preset}.gguf`);

let t0 = performance.now();
const written = await writeLlamaModel(path, { preset, ...overrides });
const generateMs = performance.now() - t0;

const llama = await getLlama({ gpu: false, maxThreads: 1, logLevel: LlamaLogLevel.error });
t0 = performance.now();
const model = await llama.loadModel({ modelPath: path });
const loadMs = performance.now() - t0;
const context = await model.createContext({ sequences: 1, contextSize: 1024 });
const sequence = context.getSequence();

// Prompt processing: 256 tokens in one evaluation.
const promptTokens = model.tokenize("the model can write a reply to the user ".repeat(40)).slice(0, 256);
t0 = performance.now();
await sequence.evaluateWithoutGeneratingNewTokens(promptTokens);
const promptTokPerS = promptTokens.length / ((performance.now() - t0) / 1000);
await sequence.clearHistory();

// Decode: greedy, one sequence (EOS is fed back like any token). Default 200 tokens.
const decodeTokens = Number(process.env.DECODE_TOKENS ?? 200);
let count = 0;
let firstAt = 0;
t0 = performance.now();
const start = [SpecialTokenId.bos as never, ...model.tokenize("hello")];
for await (const _token of sequence.evaluate(start, { temperature: 0, yieldEogToken: true })) {
  if (++count === 1) firstAt = performance.now();
  if (count > decodeTokens) break;
}
const decodeTokPerS = decodeTokens / ((performance.now() - firstAt) / 1000);
await sequence.clearHistory();

// Reply lengths at temperature 0 for 20 prompts, up to 200 tokens.
const prompts = [
  "Hello",
  "What is the capital of France?",
  "Write a poem about the sea.",
  "1+1=",
  "Tell me a story",
  "日本語で答えて",
  "🙂",
  "Explain NATS",
  "a",
  "The quick brown fox jumps over the lazy dog",
  "How are you today?",
  "List three colors",
  "ok",
  "Why is the sky blue?",
  "Translate to German: good morning",
  "x y z",
  "model test",
  "Summarize: lorem ipsum",
  "abc",
  "Please reply",
];
const lengths: number[] = [];
let byteTokens = 0;
let total = 0;
const chat = new LlamaChat({ contextSequence: sequence });
for (const text of prompts) {
  const tokens: number[] = [];
  await chat.generateResponse(
    [
      { type: "user", text },
      { type: "model", response: [] },
    ],
    {
      maxTokens: 200,
      temperature: 0,
      onToken: (t) => tokens.push(...t),
    },
  );
  await sequence.clearHistory();
  lengths.push(tokens.length);
  byteTokens += tokens.filter((t) => t >= FIRST_BYTE_TOKEN_ID && t < FIRST_PIECE_TOKEN_ID).length;
  total += tokens.length;
}
const sorted = [...lengths].sort((a, b) => a - b);

// Realized biases: from the full next-token distribution at the first 20 positions of 3 prompts.
const vocabSize = written.vocabSize;
const realized: number[][] = [];
for (const text of prompts.slice(0, 3)) {
  const tokens = model.tokenize(`<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`, true);
  let i = 0;
  for await (const out of sequence.evaluateWithMetadata(tokens, { probabilities: true }, { temperature: 1, topK: 0, topP: 1, minP: 0 })) {
    const logp = (id: number) => Math.log(out.probabilities.get(id as never) ?? 1e-45);
    const normal = Array.from({ length: vocabSize - FIRST_PIECE_TOKEN_ID }, (_, k) => logp(FIRST_PIECE_TOKEN_ID + k));
    const bytes = Array.from({ length: 256 }, (_, k) => logp(FIRST_BYTE_TOKEN_ID + k));
    const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
    const mu = mean(normal);
    const sd = Math.sqrt(mean(normal.map((x) => (x - mu) ** 2)));
    realized.push([sd, (mean(bytes) - mu) / sd, (logp(SpecialTokenId.imEnd) - mu) / sd]);
    if (++i >= 20) break;
  }
  await sequence.clearHistory();
}
const avg = (k: number) => realized.reduce((s, r) => s + r[k]!, 0) / realized.length;

console.log(
  JSON.stringify(
    {
      preset,
      params: written.params,
      parameterCount: written.parameterCount,
      fileSize: written.fileSize,
      generateMs: Math.round(generateMs),
      loadMs: Math.round(loadMs),
      promptTokPerS: Math.round(promptTokPerS),
      decodeTokPerS: Math.round(decodeTokPerS),
      replies: {
        lengths: lengths.join(","),
        median: sorted[sorted.length >> 1],
        stoppedBeforeMax: lengths.filter((n) => n < 200).length,
        empty: lengths.filter((n) => n === 0).length,
        byteTokenShare: Number((byteTokens / Math.max(1, total)).toFixed(4)),
      },
      realizedBias: { logitStd: Number(avg(0).toFixed(3)), byte: Number(avg(1).toFixed(2)), eos: Number(avg(2).toFixed(2)) },
    },
    null,
    2,
  ),
);

await chat.dispose();
await context.dispose();
await model.dispose();
await llama.dispose();
await rm(dir, { recursive: true, force: true });
