/**
 * Compression and encryption at rest, measured: `node --import tsx libs/sealed/scripts/measure.ts`.
 *
 * Real KV-state snapshots of the generated `bench` and `tiny` models (the ones `npm run bench`
 * uses, `ensureDemoModel` in the system temp folder; llama.cpp's `saveStateToFile` after a
 * prompt of N tokens, as the worker writes to L2) and session documents (JSON of a conversation
 * of N turns), through each codec of this Node and through the whole envelope (codec +
 * AES-256-GCM). Prints a markdown table: size, ratio (stored ÷ original), and CPU time per MB of
 * input to seal and to open (median of 5 runs, one thread). docs/memory.md shows the result.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureDemoModel } from "@atlas/gguf";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { type Codec, compress, decompress, hasZstd, worthCompressing } from "../src/codec.ts";
import { open, seal } from "../src/envelope.ts";

const RUNS = 5;
const codecs: Codec[] = ["gzip", "brotli", ...(hasZstd() ? (["zstd"] as Codec[]) : [])];
const key = { id: "s.kvstate:1", key: randomBytes(32) };

function cpuMs(f: () => void): number {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.cpuUsage();
    f();
    const d = process.cpuUsage(t0);
    times.push((d.user + d.system) / 1000);
  }
  return times.sort((a, b) => a - b)[Math.floor(RUNS / 2)] as number;
}

function rows(label: string, data: Uint8Array): string[] {
  const mb = data.length / (1024 * 1024);
  const out: string[] = [];
  for (const codec of codecs) {
    const packed = compress(codec, data);
    const c = cpuMs(() => compress(codec, data));
    const d = cpuMs(() => decompress(codec, packed));
    const sealed = seal(data, { codec, key, context: "x" });
    const s = cpuMs(() => seal(data, { codec, key, context: "x" }));
    const o = cpuMs(() => open(sealed, () => key.key, "x"));
    out.push(
      `| ${label} | ${(data.length / 1024).toFixed(0)} KiB | ${codec} | ${(packed.length / data.length).toFixed(3)} | ${(c / mb).toFixed(1)} | ${(d / mb).toFixed(1)} | ${(s / mb).toFixed(1)} | ${(o / mb).toFixed(1)} |`,
    );
  }
  const probe = cpuMs(() => worthCompressing(codecs.at(-1) as Codec, data));
  const verdict = worthCompressing(codecs.at(-1) as Codec, data) ? codecs.at(-1) : "none";
  out.push(`| ${label} | | probe → **${verdict}** | | ${(probe / mb).toFixed(2)} | | | |`);
  const aesOnly = cpuMs(() => seal(data, { codec: "none", key }));
  out.push(`| ${label} | ${(data.length / 1024).toFixed(0)} KiB | none | 1.000 | – | – | ${(aesOnly / mb).toFixed(1)} | – |`);
  return out;
}

async function snapshots(preset: "tiny" | "bench", tokens: number[]): Promise<{ label: string; data: Uint8Array }[]> {
  const modelPath = await ensureDemoModel(join(tmpdir(), "atlas-bench-models"), { preset });
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath });
  const out: { label: string; data: Uint8Array }[] = [];
  for (const n of tokens) {
    const context = await model.createContext({ contextSize: Math.max(512, n * 2), sequences: 1 });
    const sequence = context.getSequence();
    const text = Array.from({ length: n }, (_, i) => `word${i % 97} `).join("");
    const prompt = model.tokenize(text).slice(0, n);
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    const file = join(tmpdir(), `atlas-measure-${process.pid}-${preset}-${n}.kv`);
    await sequence.saveStateToFile(file);
    out.push({ label: `KV state, \`${preset}\`, ${prompt.length} tokens`, data: await readFile(file) });
    await rm(file, { force: true });
    await context.dispose();
  }
  await model.dispose();
  return out;
}

function sessionDocument(turns: number): Uint8Array {
  const at = "2026-12-04T12:00:00.000Z";
  const layers = Array.from({ length: turns }, (_, i) => ({
    id: `req_${i.toString(16).padStart(8, "0")}`,
    created_at: at,
    messages: [
      { role: "user", content: `Question ${i}: how does the harbour look at ${i % 24}:00, and what do the boats carry today?` },
      {
        role: "assistant",
        content: `At ${i % 24}:00 the harbour is ${i % 2 ? "quiet" : "busy"}; the boats carry fish, salt and letters (${i}).`,
      },
    ],
    usage: { prompt_tokens: 40 + i, completion_tokens: 24, total_tokens: 64 + i },
  }));
  const doc = {
    version: 1,
    session_id: "s-1",
    tenant: "default",
    created_at: at,
    updated_at: at,
    model: "atlas-bench",
    layers,
    metadata: {},
  };
  return new TextEncoder().encode(JSON.stringify(doc));
}

const header =
  "| data | size | codec | ratio | compress ms/MB | decompress ms/MB | seal ms/MB (codec + AES-GCM) | open ms/MB |\n|---|---|---|---|---|---|---|---|";
const all = [
  ...(await snapshots("bench", [128, 512])),
  ...(await snapshots("tiny", [512])),
  { label: "session document, 1 turn", data: sessionDocument(1) },
  { label: "session document, 200 turns", data: sessionDocument(200) },
];
console.log(
  `Node ${process.version}, ${codecs.join(", ")}${hasZstd() ? "" : " (no zstd in this Node)"}; CPU time per MB of input, median of ${RUNS}`,
);
console.log(header);
for (const x of all) for (const r of rows(x.label, x.data)) console.log(r);

// The request path: one append's layer (a short exchange, ≈ 400 B of JSON) sealed as persistence does.
const { Sealer } = await import("../src/sealer.ts");
const layer = new TextEncoder().encode(
  JSON.stringify({
    id: "req_1",
    created_at: "2026-12-04T12:00:00.000Z",
    messages: [
      { role: "user", content: "What is NATS? ".repeat(10) },
      { role: "assistant", content: "A messaging system. ".repeat(8) },
    ],
    usage: null,
  }),
);
for (const encrypted of [false, true]) {
  const sealer = new Sealer({ codec: codecs.at(-1) as Codec });
  const N = 20_000;
  const t0 = process.cpuUsage();
  for (let i = 0; i < N; i++)
    seal(layer, {
      codec: layer.length < sealer.minCompressBytes ? "none" : sealer.codec,
      key: encrypted ? key : undefined,
      context: "default/s-1",
    });
  const d = process.cpuUsage(t0);
  console.log(
    `append of a ${layer.length} B layer, ${encrypted ? "encrypted" : "not encrypted"}: ${((d.user + d.system) / N).toFixed(1)} µs CPU each (codec none below ${sealer.minCompressBytes} B)`,
  );
}
