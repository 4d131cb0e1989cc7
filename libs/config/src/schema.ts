/**
 * The environment, as one zod schema. Every variable ATLAS reads is here with its default and
 * its description; `docs/configuration.md` is checked against this list by a test.
 *
 * @module
 */
import { z } from "zod";

const bool = z
  .enum(["1", "0", "true", "false", "yes", "no", "on", "off"], {
    error: 'must be one of "1", "0", "true", "false", "yes", "no", "on", "off"',
  })
  .transform((v) => v === "1" || v === "true" || v === "yes" || v === "on");
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const num = (min: number, max: number) => z.coerce.number().min(min).max(max);

/** `ATLAS_GPU`: node-llama-cpp's `gpu` option; `"false"` becomes `false` (CPU only). */
const gpu = z
  .enum(["auto", "cuda", "vulkan", "metal", "false"], { error: 'must be one of "auto", "cuda", "vulkan", "metal", "false"' })
  .transform((v) => (v === "false" ? false : v));

/** `ATLAS_GPU_LAYERS`: node-llama-cpp's `gpuLayers` model option. */
const gpuLayers = z.string().transform((text, ctx): "auto" | "max" | number => {
  if (text === "auto" || text === "max") return text;
  if (/^\d{1,5}$/.test(text)) return Number(text);
  ctx.addIssue({ code: "custom", message: 'must be "auto", "max" or a number of layers (0 to 99999)' });
  return z.NEVER;
});

/** A parsed `ATLAS_API_KEYS` entry. */
export interface ApiKeyEntry {
  key: string;
  tenant: string;
  admin: boolean;
}

const apiKeys = z.string().transform((text, ctx): ApiKeyEntry[] => {
  const out: ApiKeyEntry[] = [];
  for (const raw of text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")) {
    const [key = "", tenant = "default", role] = raw.split(":");
    if (key.length < 8 || !/^[A-Za-z0-9._~+/=-]+$/.test(key)) {
      ctx.addIssue({ code: "custom", message: "every key must be at least 8 characters of [A-Za-z0-9._~+/=-]" });
      return z.NEVER;
    }
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(tenant) || (role !== undefined && role !== "admin")) {
      ctx.addIssue({ code: "custom", message: 'entries are "key", "key:tenant" or "key:tenant:admin"' });
      return z.NEVER;
    }
    out.push({ key, tenant, admin: role === "admin" });
  }
  return out;
});

/** A model id as `ATLAS_MODELS` and `ATLAS_MODEL_ALIASES` spell it (what clients send as `model`). */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$/;
const MODEL_NAME_RULE = "1-256 of [A-Za-z0-9._:/@+-], starting with a letter or digit";
/** Most workers `ATLAS_MODELS` may ask for in all (as `ATLAS_WORKERS`). */
const MAX_WORKERS = 64;

/** A parsed `ATLAS_MODELS` entry: one model `npm start` runs workers for. */
export interface ModelSpec {
  /** The model id clients name (the workers' `ATLAS_MODEL_ID`). */
  id: string;
  /** The GGUF file (the workers' `ATLAS_MODEL`). */
  path: string;
  /** Workers to run for it (0: known to the api, served by workers started elsewhere). */
  workers: number;
}

/** Splits a comma-separated list into trimmed, non-empty entries. */
const entries = (text: string): string[] =>
  text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");

const models = z.string().transform((text, ctx): ModelSpec[] => {
  const out: ModelSpec[] = [];
  const fail = (message: string) => {
    ctx.addIssue({ code: "custom", message });
    return z.NEVER;
  };
  for (const [i, raw] of entries(text).entries()) {
    const eq = raw.indexOf("=");
    const id = eq === -1 ? "" : raw.slice(0, eq).trim();
    // A trailing `:<digits>` is the worker count (a path may hold other colons: `C:\m.gguf`).
    const m = /^(.+?)(?::(\d+))?$/.exec(raw.slice(eq + 1).trim());
    const path = m?.[1]?.trim() ?? "";
    if (eq === -1 || path === "") return fail(`entry ${i + 1} ("${raw}") is not "name=path" or "name=path:workers"`);
    if (!MODEL_NAME.test(id)) return fail(`entry ${i + 1}: the model name "${id}" must be ${MODEL_NAME_RULE}`);
    if (out.some((e) => e.id === id)) return fail(`the model name "${id}" is given twice`);
    const workers = m?.[2] === undefined ? 1 : Number(m[2]);
    if (workers > MAX_WORKERS) return fail(`entry ${i + 1} ("${id}") asks for ${workers} workers; at most ${MAX_WORKERS}`);
    out.push({ id, path, workers });
  }
  if (out.length === 0) return fail('must list at least one "name=path[:workers]" (or leave it unset)');
  const total = out.reduce((s, e) => s + e.workers, 0);
  if (total > MAX_WORKERS) return fail(`asks for ${total} workers in all; at most ${MAX_WORKERS}`);
  return out;
});

/** A parsed `ATLAS_MODEL_ALIASES` entry. */
export interface ModelAlias {
  /** The name clients may send as `model`. */
  alias: string;
  /** The served model id it stands for. */
  model: string;
}

const modelAliases = z.string().transform((text, ctx): ModelAlias[] => {
  const out: ModelAlias[] = [];
  const fail = (message: string) => {
    ctx.addIssue({ code: "custom", message });
    return z.NEVER;
  };
  for (const raw of entries(text)) {
    const [alias = "", model = "", ...rest] = raw.split("=").map((s) => s.trim());
    if (rest.length > 0 || !MODEL_NAME.test(alias) || !MODEL_NAME.test(model)) {
      return fail(`"${raw}" is not "alias=model" (each name ${MODEL_NAME_RULE})`);
    }
    if (alias === model) return fail(`the alias "${alias}" names itself`);
    if (out.some((a) => a.alias === alias)) return fail(`the alias "${alias}" is given twice`);
    out.push({ alias, model });
  }
  return out;
});

/** What each variable means; the key is the variable's name. */
export const configSchema = z.object({
  // The seed's variables, same names and meaning.
  ATLAS_ENABLED: bool
    .default(true)
    .describe("Turns on the `atlas` request extensions; `0` gives a plain OpenAI-compatible server that answers them with a 400."),
  ATLAS_MAX_CONCURRENT: int(1, 4096)
    .default(32)
    .describe("Requests the api admits at once; more wait in a bounded queue, then get a 503 with `Retry-After`."),
  ATLAS_LATENCY_BUDGET_MS: num(0.01, 60_000)
    .default(5)
    .describe("API overhead budget per request in ms (total time minus engine time); requests over it are counted."),
  ATLAS_MEMORY_PATH: z
    .string()
    .min(1)
    .default("./data/memory")
    .describe("Folder of the readable JSON mirror of every session (backup and export)."),
  ATLAS_AUTO_SAVE_INTERVAL: int(0, 86_400)
    .default(300)
    .describe("Seconds between mirror writes and L2→L3 promotion; 0 turns the timer off."),
  // Memory at rest (docs/security.md, "Encryption at rest"; docs/adr/0018-memory-at-rest.md).
  ATLAS_MEMORY_KEY: z
    .string()
    .optional()
    .describe(
      "Master key (32 bytes, base64: `openssl rand -base64 32`) wrapping the per-tenant data keys that encrypt session memory, the mirror and KV snapshots at rest (AES-256-GCM). Unset (and no key file): compressed only.",
    ),
  ATLAS_MEMORY_KEY_FILE: z
    .string()
    .optional()
    .describe(
      "File holding the master key instead of ATLAS_MEMORY_KEY: one base64 key per line, the current one first, older ones after it (still unwrap).",
    ),
  ATLAS_MEMORY_KEY_PREVIOUS: z
    .string()
    .optional()
    .describe(
      "Older master keys (comma-separated base64) still accepted to unwrap data keys, until `npm run memory-key -- rotate` re-wraps them.",
    ),
  ATLAS_MEMORY_REQUIRE_SEALED: bool
    .default(false)
    .describe(
      "With a master key: refuse session records, chunks, mirror files and KV snapshots that are not encrypted (written before encryption, or put in by someone who can write the store), as changed ones are. Set it once old data is migrated.",
    ),
  ATLAS_MEMORY_COMPRESSION: z
    .enum(["auto", "zstd", "brotli", "gzip", "none"])
    .default("auto")
    .describe(
      "Codec for session memory and KV snapshots at rest: `auto` is zstd where Node has it (≥ 22.15), else brotli. Recorded per record; all are read.",
    ),
  ATLAS_METRICS_INTERVAL: int(50, 3_600_000).default(1000).describe("Milliseconds between metric snapshots on `atlas.metrics.snapshot`."),
  // NATS.
  NATS_URL: z
    .string()
    .min(1)
    .optional()
    .describe("NATS server URL(s), comma-separated. Unset: `npm start` runs an embedded nats-server, services use nats://127.0.0.1:4222."),
  NATS_USER: z.string().min(1).optional().describe("NATS user name, when the server requires one."),
  NATS_PASSWORD: z.string().min(1).optional().describe("NATS password for `NATS_USER`."),
  ATLAS_MAX_WORKERS: int(1, 1024)
    .default(16)
    .describe(
      "Size of the workers' NATS user pool (`worker-1`…`worker-<n>`, each allowed only its own worker id's subjects) that `npm run nats-config` and the compose init generate: at most this many workers run at once (docs/adr/0015-worker-credentials.md).",
    ),
  ATLAS_WORKER_CREDENTIALS: z
    .string()
    .min(1)
    .optional()
    .describe(
      "A folder of the worker pool's password files (`worker-<n>`, one password each; compose's `nats-init` writes it): the worker claims a free one, connects as that user and takes its name as its worker id. Unset: `NATS_USER`/`NATS_PASSWORD` (a pool user's name is then the worker id).",
    ),
  ATLAS_NATS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "must be dot-separated tokens of letters, digits, '_' or '-'")
    .default("atlas")
    .describe("First token(s) of every subject, so several clusters can share one NATS server."),
  ATLAS_JS_REPLICAS: int(1, 5)
    .default(1)
    .describe(
      "Replicas of every JetStream stream, KV bucket and object store (session memory, scheduler state, KV snapshots); 3 on a cluster of 3 or more nats-server nodes. Existing ones are changed at start, or the service stops and says why (docs/deployment.md).",
    ),
  // HTTP.
  HOST: z.string().min(1).default("127.0.0.1").describe("Address the api listens on (`0.0.0.0` in containers)."),
  PORT: int(0, 65_535).default(8080).describe("Port the api listens on."),
  ATLAS_API_KEYS: apiKeys
    .optional()
    .describe("API keys: comma-separated `key`, `key:tenant` or `key:tenant:admin`. Unset: the server runs open (and says so at start)."),
  ATLAS_BODY_LIMIT_BYTES: int(1024, 256 * 1024 * 1024)
    .default(8 * 1024 * 1024)
    .describe("Largest request body the api accepts; larger ones get a 413."),
  // Limits (docs/security.md).
  ATLAS_ADMISSION_QUEUE: int(0, 1_000_000)
    .default(128)
    .describe("Generation requests that may wait for one of the `ATLAS_MAX_CONCURRENT` places; more get a 503 with `Retry-After` at once."),
  ATLAS_ADMISSION_WAIT_MS: int(0, 600_000)
    .default(10_000)
    .describe("How long a generation request waits in the admission queue before it gets a 503 with `Retry-After`."),
  ATLAS_RATE_LIMIT_RPM: int(0, 1_000_000_000)
    .default(0)
    .describe("Requests per minute the api accepts in all (token bucket holding one minute); over it a 429 with `Retry-After`. 0: off."),
  ATLAS_RATE_LIMIT_TPM: int(0, 1_000_000_000)
    .default(0)
    .describe("Tokens per minute (prompt estimate + `max_tokens` × choices, settled to the real usage) in all; over it a 429. 0: off."),
  ATLAS_SESSION_RATE_LIMIT_RPM: int(0, 1_000_000_000)
    .default(0)
    .describe("Requests per minute per session (`atlas.session_id` within a tenant; without one, per tenant); over it a 429. 0: off."),
  ATLAS_SESSION_RATE_LIMIT_TPM: int(0, 1_000_000_000)
    .default(0)
    .describe("Tokens per minute per session (without a session, per tenant); over it a 429 with `Retry-After`. 0: off."),
  ATLAS_MAX_MESSAGES: int(1, 1_000_000).default(2048).describe("Most messages one chat request may carry; more get a 400."),
  ATLAS_BREAKER_FAILURES: int(1, 1000)
    .default(3)
    .describe("Consecutive failures (unreachable or timed out) that open the circuit breaker of a downstream service."),
  ATLAS_BREAKER_OPEN_MS: int(50, 600_000)
    .default(2000)
    .describe("How long an opened breaker stays open before a half-open probe; doubles after a failed probe, up to 4 times as long."),
  ATLAS_SLOT_CREDITS: int(0, 1024)
    .default(64)
    .describe(
      "Slot credits an api instance holds at most per model: slots its workers keep for it between requests, which then skip the scheduler (a session's turn uses the credit whose slot holds the session); holding every slot of the model, the api queues its own sessionless requests for them (docs/scheduler.md). 0: every request goes through the scheduler.",
    ),
  // Model and worker.
  ATLAS_MODEL: z
    .string()
    .min(1)
    .optional()
    .describe("Path of the GGUF model the workers load. Unset: a random-weight demo model is generated under `ATLAS_DATA_DIR`."),
  ATLAS_MODEL_ID: z
    .string()
    .min(1)
    .max(256)
    .optional()
    .describe("Model id shown in `/v1/models` and accepted in `model`; default the GGUF file name without `.gguf`."),
  ATLAS_SLOTS: int(1, 256).default(4).describe("Context sequences (slots) per worker: each worker's share of the context pool."),
  ATLAS_CTX_SIZE: int(128, 1_048_576).default(4096).describe("Context size of each slot, in tokens."),
  ATLAS_THREADS: int(1, 256)
    .default(1)
    .describe(
      "llama.cpp threads per worker. Keep 1 on the prebuilt CPU binary (no OpenMP: a second thread decodes slower, 5-20× slower once the cores are shared); with the source build (`npm run build:engine`, OpenMP) set it to the cores the worker may use (see docs/configuration.md).",
    ),
  ATLAS_GPU: gpu
    .prefault("false")
    .describe(
      "GPU backend of the workers' llama.cpp: `false` (CPU only), `auto` (the best GPU found, else the CPU), `cuda`, `vulkan` or `metal` (that one, or the worker does not load). Status shows what the worker got (docs/deployment.md).",
    ),
  ATLAS_GPU_LAYERS: gpuLayers
    .default("auto")
    .describe(
      "Model layers offloaded to the GPU: `auto` (as many as fit in free VRAM beside the slots' context), `max` (all, fails when they do not fit) or a number. Ignored on the CPU.",
    ),
  ATLAS_WORKER_ID: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 of [A-Za-z0-9_-]")
    .optional()
    .describe("Worker id in subjects and status; default a random id per process."),
  ATLAS_WORKER_BACKEND: z
    .enum(["llama", "openai"])
    .default("llama")
    .describe(
      "What a worker runs: `llama` (llama.cpp in-process, the model of `ATLAS_MODEL`) or `openai` (a proxy in front of an OpenAI-compatible server at `ATLAS_UPSTREAM_URL`: llama-server, vLLM, another ATLAS; its slots join the pool like a local worker's, docs/deployment.md).",
    ),
  ATLAS_UPSTREAM_URL: z
    .url({ protocol: /^https?$/, error: "must be an http(s) URL such as http://127.0.0.1:8081/v1" })
    .optional()
    .describe(
      "With `ATLAS_WORKER_BACKEND=openai`: the upstream's OpenAI base URL, `/v1` included (`http://llama:8080/v1`); required then.",
    ),
  ATLAS_UPSTREAM_API_KEY: z
    .string()
    .min(1)
    .optional()
    .describe("With `ATLAS_WORKER_BACKEND=openai`: the bearer key the proxy worker sends upstream (unset: none)."),
  ATLAS_UPSTREAM_MODEL: z
    .string()
    .min(1)
    .max(256)
    .optional()
    .describe(
      "With `ATLAS_WORKER_BACKEND=openai`: the model name sent upstream; default the first model the upstream's `/v1/models` lists. The pool's model id is `ATLAS_MODEL_ID`, else this name.",
    ),
  ATLAS_UPSTREAM_SLOTS: int(1, 256)
    .optional()
    .describe(
      "With `ATLAS_WORKER_BACKEND=openai`: the requests the upstream runs at once, registered as the proxy worker's slots. Unset: discovered (llama-server's `/props` `total_slots`, another ATLAS's pool for the model in `/v1/atlas/status`), else `ATLAS_SLOTS`.",
    ),
  ATLAS_WORKERS: int(0, 64).default(1).describe("How many inference workers `npm start` runs."),
  ATLAS_MODELS: models
    .optional()
    .describe(
      "Several models: comma-separated `name=path[:workers]` (workers default 1, 0 to 64 in all); `npm start` runs that many workers of each, every one with its `ATLAS_MODEL`/`ATLAS_MODEL_ID`, and the api knows these names even while none of their workers is up (503 with `Retry-After`, not 404). Set, it wins over `ATLAS_MODEL`, `ATLAS_MODEL_ID` and `ATLAS_WORKERS`, which `npm start` then ignores (with a warning). Unset: one model, the single-model variables (docs/deployment.md).",
    ),
  ATLAS_MODEL_ALIASES: modelAliases
    .optional()
    .describe(
      "Other names for served models: comma-separated `alias=model` (`gpt-4o=llama`). A request's `model` that is an alias is routed to that model, and `/v1/models` lists it (`root` names the model); a served model's own id wins over an alias of the same name.",
    ),
  // Tiers (MiB). L1 (the slots' KV) has no budget of its own: llama.cpp allocates it for
  // ATLAS_SLOTS × ATLAS_CTX_SIZE tokens when the model loads, used or not (docs/scheduler.md).
  ATLAS_L2_BUDGET_MB: int(0, 1_048_576).default(256).describe("L2 budget: KV snapshots on a worker's disk, in MiB."),
  ATLAS_L3_BUDGET_MB: int(0, 1_048_576)
    .default(1024)
    .describe("L3 budget: KV snapshots in the JetStream object store, cluster-wide, in MiB."),
  ATLAS_KV_RESTORE: z
    .enum(["cost", "always", "never"])
    .default("cost")
    .describe("Restore a session's KV snapshot from L2/L3: when cheaper than recomputing it (`cost`, measured), `always`, or `never`."),
  ATLAS_KV_SAVE_ON_STOP: bool
    .default(true)
    .describe(
      "A stopping worker (SIGTERM) saves the sessions its slots hold and its L2 snapshots to L3, dearest first, within `ATLAS_SHUTDOWN_GRACE_MS`, so they resume warm after a restart.",
    ),
  // Process.
  ATLAS_DATA_DIR: z
    .string()
    .min(1)
    .default("./data")
    .describe("Folder for the embedded nats-server's store, the demo model and worker snapshots."),
  ATLAS_LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info").describe("Log level."),
  ATLAS_LOG_FORMAT: z
    .enum(["auto", "pretty", "json"])
    .default("auto")
    .describe("`pretty` on a terminal, JSON (pino) otherwise when `auto`."),
  ATLAS_SHUTDOWN_GRACE_MS: int(0, 600_000)
    .default(5000)
    .describe(
      "How long a stopping service lets in-flight work finish before it aborts it; a worker then has as long again to save its warm sessions to L3.",
    ),
});

/** The parsed configuration. */
export type Config = z.infer<typeof configSchema>;
/** Names of every variable ATLAS reads. */
export type ConfigKey = keyof typeof configSchema.shape;
