/**
 * Command line for `@atlas/gguf`:
 *
 * ```sh
 * node --import tsx libs/gguf/src/cli.ts generate --preset tiny --out model.gguf [--seed N] [...]
 * node --import tsx libs/gguf/src/cli.ts inspect model.gguf
 * node --import tsx libs/gguf/src/cli.ts demo --dir data/models [--preset bench] [--chat-template llama3.1]
 * ```
 *
 * `generate` and `demo` print what they wrote as JSON; `inspect` prints the model info,
 * validation result and fingerprint as JSON and exits with 1 if the model does not validate.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { ChatTemplateFamily } from "./chat_templates.ts";
import { ensureDemoModel } from "./demo.ts";
import { modelFingerprint } from "./fingerprint.ts";
import { GgufError } from "./format.ts";
import type { ModelPreset, WeightType, WriteLlamaModelOptions } from "./params.ts";
import { readGgufHeader } from "./reader.ts";
import { validateLlamaModel } from "./validate.ts";
import { writeLlamaModel } from "./writer.ts";

const USAGE = `Usage:
  cli.ts generate --out FILE [--preset tiny|bench] [--seed N] [--name S] [--tensor-type F32|F16|Q8_0]
                  [--embedding-length N] [--block-count N] [--head-count N] [--head-count-kv N]
                  [--feed-forward-length N] [--context-length N] [--weight-std X] [--eos-bias X] [--byte-bias X]
                  [--chat-template chatml|llama3.1|qwen2.5]
  cli.ts inspect FILE
  cli.ts demo --dir DIR [--preset tiny|bench] [--chat-template chatml|llama3.1|qwen2.5]`;

function numberOption(values: Record<string, unknown>, name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n))
    throw new Error(`Option "--${name}" must be a number, got "${String(v)}"`);
  return n;
}

async function generate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      out: { type: "string" },
      preset: { type: "string" },
      seed: { type: "string" },
      name: { type: "string" },
      "tensor-type": { type: "string" },
      "embedding-length": { type: "string" },
      "block-count": { type: "string" },
      "head-count": { type: "string" },
      "head-count-kv": { type: "string" },
      "feed-forward-length": { type: "string" },
      "context-length": { type: "string" },
      "weight-std": { type: "string" },
      "eos-bias": { type: "string" },
      "byte-bias": { type: "string" },
      "chat-template": { type: "string" },
    },
  });
  if (values.out === undefined) throw new Error(`Option "--out" is required\n${USAGE}`);
  const options: WriteLlamaModelOptions = {};
  if (values.preset !== undefined) options.preset = values.preset as ModelPreset;
  if (values.name !== undefined) options.name = values.name;
  if (values["tensor-type"] !== undefined) options.tensorType = values["tensor-type"] as WeightType;
  if (values["chat-template"] !== undefined) options.chatTemplate = values["chat-template"] as ChatTemplateFamily;
  const numeric = {
    seed: "seed",
    embeddingLength: "embedding-length",
    blockCount: "block-count",
    headCount: "head-count",
    headCountKv: "head-count-kv",
    feedForwardLength: "feed-forward-length",
    contextLength: "context-length",
    weightStd: "weight-std",
    eosBias: "eos-bias",
    byteBias: "byte-bias",
  } as const;
  for (const [key, flag] of Object.entries(numeric)) {
    const n = numberOption(values, flag);
    if (n !== undefined) options[key as keyof typeof numeric] = n;
  }
  const started = performance.now();
  const written = await writeLlamaModel(values.out, options);
  const { params, ...rest } = written;
  console.log(JSON.stringify({ ...rest, params, ms: Math.round(performance.now() - started) }, null, 2));
}

async function inspect(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const path = positionals[0];
  if (path === undefined) throw new Error(`A model file is required\n${USAGE}`);
  const validation = await validateLlamaModel(path);
  let fingerprint: string | null = null;
  let metadata: Record<string, unknown> | null = null;
  try {
    fingerprint = await modelFingerprint(path);
    const header = await readGgufHeader(path);
    metadata = {};
    for (const [key, value] of Object.entries(header.metadata)) {
      metadata[key] = Array.isArray(value) ? `[${value.length} items]` : typeof value === "bigint" ? value.toString() : value;
    }
  } catch {
    // validation already names the problem
  }
  const report = {
    path,
    ok: validation.ok,
    info: validation.ok ? validation.info : null,
    problems: validation.ok ? [] : validation.problems,
    warnings: validation.warnings,
    fingerprint,
    metadata,
  };
  console.log(JSON.stringify(report, null, 2));
  return validation.ok ? 0 : 1;
}

async function demo(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { dir: { type: "string" }, preset: { type: "string" }, "chat-template": { type: "string" } },
  });
  if (values.dir === undefined) throw new Error(`Option "--dir" is required\n${USAGE}`);
  const started = performance.now();
  const path = await ensureDemoModel(values.dir, {
    preset: (values.preset ?? "tiny") as ModelPreset,
    chatTemplate: (values["chat-template"] ?? "chatml") as ChatTemplateFamily,
  });
  console.log(JSON.stringify({ path, ms: Math.round(performance.now() - started) }));
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "generate":
      await generate(rest);
      return 0;
    case "inspect":
      return inspect(rest);
    case "demo":
      await demo(rest);
      return 0;
    default:
      console.error(USAGE);
      return command === undefined || command === "--help" || command === "-h" ? 0 : 2;
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  console.error(err instanceof GgufError || err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
