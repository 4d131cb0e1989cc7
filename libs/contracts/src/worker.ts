/**
 * The inference worker's mailbox: generation as a stream of text chunks.
 *
 * Sender: `services/api/src/dispatch.ts`. Handler: `services/inference-worker/src/service.ts`
 * (which drives `services/inference-worker/src/engine.ts`).
 *
 * Subjects: `<prefix>.worker.<worker_id>.generate` for one worker (the scheduler's choice), and
 * `<prefix>.worker.any.generate`, served by every worker in the queue group `inference-worker`
 * (dispatch without affinity: the fallback when the scheduler is out).
 *
 * @module
 */
import { z } from "zod";
import { CacheStrategy, CacheTier } from "./cache.ts";
import { defineStream } from "./define.ts";
import { SubjectToken, subject } from "./subjects.ts";
import { JsonSchemaObject, ToolCall, ToolCallDelta, ToolChoice, ToolFunction, ToolMessageFields } from "./tools.ts";

/** The worker id that addresses the queue group instead of one worker. */
export const ANY_WORKER = "any";

/** One chat message as the engine needs it (content already flattened to text). */
export const EngineMessage = z.object({
  role: z.enum(["system", "developer", "user", "assistant", "tool"]),
  content: z.string(),
  ...ToolMessageFields,
});
/** One chat message as the engine needs it. */
export type EngineMessage = z.infer<typeof EngineMessage>;

/** How the output must be shaped. */
export const ResponseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: z.string().min(1).max(64),
      description: z.string().optional(),
      schema: JsonSchemaObject.optional(),
      strict: z.boolean().nullable().optional(),
    }),
  }),
]);
/** How the output must be shaped. */
export type ResponseFormat = z.infer<typeof ResponseFormat>;

/** Sampling and length controls, already resolved to concrete values by the api. */
export const Sampling = z.object({
  temperature: z.number().min(0).max(2),
  top_p: z.number().gt(0).max(1),
  seed: z.number().int().optional(),
  presence_penalty: z.number().min(-2).max(2),
  frequency_penalty: z.number().min(-2).max(2),
  /** Most tokens to generate; the worker clamps it to what the context leaves. */
  max_tokens: z.number().int().positive().optional(),
  stop: z.array(z.string().min(1)).max(4),
  /** Keep generating past end-of-sequence until `max_tokens` (llama-server's `ignore_eos`; benchmarks). */
  ignore_eos: z.boolean().default(false),
});
/** Sampling and length controls. */
export type Sampling = z.infer<typeof Sampling>;

/** Most alternatives a token's log-probability comes with (OpenAI's `top_logprobs` limit). */
export const MAX_TOP_LOGPROBS = 20;

/** One sequence to generate: a chat (messages) or a raw completion (prompt). */
export const GenerateRequest = z
  .object({
    /** The api's request id plus the choice index, for logs. */
    request_id: z.string().min(1).max(200),
    /** The model id the client asked for; the worker refuses another model. */
    model: z.string().min(1),
    messages: z.array(EngineMessage).min(1).optional(),
    prompt: z.string().optional(),
    sampling: Sampling,
    response_format: ResponseFormat.default({ type: "text" }),
    /**
     * Return each generated token's log-probability and this many most likely alternatives
     * (OpenAI's `top_logprobs`; the legacy completions' `logprobs`) in the chunks.
     */
    logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).optional(),
    /** Functions the model may call (chat only), rendered by the model's own chat template. */
    tools: z.array(ToolFunction).min(1).max(128).optional(),
    /** With `tools`: whether a call is up to the model (default `auto`), required, or this function. */
    tool_choice: ToolChoice.optional(),
    /** With `tools`: whether one reply may make several calls (default true). */
    parallel_tool_calls: z.boolean().optional(),
    /** The scheduler's lease on one slot of this worker; absent on the queue-group fallback. */
    lease: z
      .object({
        lease_id: z.string(),
        fencing_token: z.number().int().positive(),
        slot: z.number().int().nonnegative(),
        /**
         * A slot credit (docs/scheduler.md): at the end of a generation that succeeds the worker
         * keeps the lease for its holder instead of releasing it, and says so in
         * `GenerateEnd.credit`; the holder sends its next request straight here under the same
         * lease. The worker gives the lease back itself once it has been idle `CREDIT_IDLE_MS`,
         * when the scheduler revokes it, or when the worker drains.
         */
        keep: z.boolean().optional(),
      })
      .optional(),
    /**
     * The eviction strategy the request named (`atlas.cache_strategy`): when this request's
     * session needs room in the worker's L2 or L3, the victims are chosen by it.
     */
    cache_strategy: CacheStrategy.optional(),
    /** Tenant-scoped session whose KV state the slot keeps between turns. */
    session: z.string().min(3).max(300).nullable().optional(),
    /**
     * The session has nothing stored yet (its first turn): no L2/L3 snapshot of it can exist,
     * so the worker does not look for one.
     */
    session_fresh: z.boolean().optional(),
    /**
     * Where the session history the api recalled sits in `messages`: from index `start`, the
     * layers' message counts, oldest first. The worker drops the oldest of them when the prompt
     * and the reply's room do not fit the context (the api's token estimate is only an estimate).
     */
    history: z
      .object({
        start: z.number().int().nonnegative(),
        layers: z.array(z.number().int().positive()).max(10_000),
      })
      .optional(),
  })
  .refine((r) => (r.messages === undefined) !== (r.prompt === undefined), {
    message: "exactly one of messages or prompt is required",
  });
/** One sequence to generate. */
export type GenerateRequest = z.input<typeof GenerateRequest>;

/**
 * One token and its log-probability under the request's sampling settings (the distribution
 * the token was drawn from, after temperature, top-k and top-p), as OpenAI reports it: the
 * token's text, its UTF-8 bytes (a token may hold part of a character), ln p.
 */
export const TokenChoice = z.object({
  token: z.string(),
  bytes: z.array(z.number().int().min(0).max(255)),
  logprob: z.number(),
});
/** One token and its log-probability. */
export type TokenChoice = z.infer<typeof TokenChoice>;

/** A generated token's log-probability with the most likely alternatives at its position. */
export const TokenLogprob = TokenChoice.extend({ top: z.array(TokenChoice).max(MAX_TOP_LOGPROBS) });
/** A generated token's log-probability with the most likely alternatives. */
export type TokenLogprob = z.infer<typeof TokenLogprob>;

/** A piece of generated text; always whole UTF-8 characters. */
export const GenerateChunk = z.object({
  text: z.string(),
  /** Tokens generated since the previous chunk. */
  tokens: z.number().int().nonnegative(),
  /**
   * With `GenerateRequest.logprobs`: those tokens' log-probabilities, in order. A token whose text
   * a stop string swallowed whole is not reported (its text is not in the answer either).
   */
  logprobs: z.array(TokenLogprob).optional(),
  /** Pieces of tool calls (with `GenerateRequest.tools`), in order. */
  tool_calls: z.array(ToolCallDelta).optional(),
});
/** A piece of generated text. */
export type GenerateChunk = z.infer<typeof GenerateChunk>;

/** Token counts of one sequence. */
export const GenerateUsage = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  /** Prompt tokens that were already in the slot and were not evaluated again. */
  cached_tokens: z.number().int().nonnegative(),
});
/** Token counts of one sequence. */
export type GenerateUsage = z.infer<typeof GenerateUsage>;

/** How one sequence ended. */
export const GenerateEnd = z.object({
  finish_reason: z.enum(["stop", "length", "tool_calls"]),
  /** The calls the reply made, whole (`finish_reason: "tool_calls"`). */
  tool_calls: z.array(ToolCall).optional(),
  usage: GenerateUsage,
  worker_id: z.string(),
  slot: z.number().int().nonnegative(),
  /** The fencing token of the lease the sequence ran under; null on the queue-group fallback. */
  fencing_token: z.number().int().positive().nullable().default(null),
  /** Where the prompt's reused tokens came from: the slot itself, a restored snapshot, or nowhere. */
  cache_tier: CacheTier.default("miss"),
  /**
   * The lease the worker keeps for the caller (a `keep` lease that stays a credit): the caller may
   * send its next request straight to this worker under it, within `CREDIT_IDLE_MS`. Null: the
   * lease ended with the generation (released).
   */
  credit: z
    .object({ lease_id: z.string(), fencing_token: z.number().int().positive(), slot: z.number().int().nonnegative() })
    .nullable()
    .default(null),
  /** Recalled layers (`GenerateRequest.history`) the worker dropped so that the prompt fits. */
  history_dropped: z.number().int().nonnegative().default(0),
  /** Milliseconds: waiting for a slot, until the first token, generating after it. */
  timings: z.object({
    queue_ms: z.number().nonnegative(),
    ttft_ms: z.number().nonnegative(),
    generation_ms: z.number().nonnegative(),
  }),
});
/** How one sequence ended. */
export type GenerateEnd = z.infer<typeof GenerateEnd>;

/**
 * What an inference worker tells discovery about itself (`$SRV.INFO` metadata, which NATS micro
 * carries as strings): parsed by the api's model catalog, numbers coerced back.
 */
export const WorkerMetadata = z.object({
  worker_id: z.string().min(1),
  /** The model id clients name. */
  model: z.string().min(1),
  /** Hash of the model file's header and tensor layout: KV snapshots restore only into the same one. */
  fingerprint: z.string(),
  /** The model file's modification time, in s (OpenAI's `created`). */
  created: z.coerce.number().int().nonnegative(),
  /** Tokens per slot. */
  ctx_size: z.coerce.number().int().positive(),
  slots: z.coerce.number().int().positive(),
});
/** What an inference worker tells discovery about itself. */
export type WorkerMetadata = z.infer<typeof WorkerMetadata>;

/**
 * One model the cluster serves, gathered from its workers' metadata: what `/v1/models` lists
 * and what the api routes by (the api's catalog, `services/api/src/catalog.ts`).
 */
export const ServedModel = WorkerMetadata.pick({ fingerprint: true, created: true, ctx_size: true }).extend({
  /** The model id clients name (the workers' `model`). */
  id: z.string().min(1),
  /** The workers that serve it. */
  workers: z.array(z.string().min(1)),
  /** Slots of all its workers together. */
  slots: z.number().int().nonnegative(),
});
/** One model the cluster serves. */
export type ServedModel = z.infer<typeof ServedModel>;

/** A worker's metadata as discovery carries it: every value a string. */
export function workerMetadata(m: WorkerMetadata): Record<string, string> {
  return Object.fromEntries(Object.entries(WorkerMetadata.parse(m)).map(([k, v]) => [k, String(v)]));
}

/** The cluster's L3 tier of KV snapshots: a JetStream object store under the prefix. */
export function l3Bucket(prefix: string): string {
  return `${prefix.replaceAll(".", "_")}_kv_l3`;
}

/** Generate on one worker (`worker_id`) or on any (`ANY_WORKER`). */
export const WorkerGenerate = defineStream({
  name: "worker.generate",
  subject: (prefix, p: { workerId: string }) => subject(prefix, "worker", SubjectToken.parse(p.workerId), "generate"),
  request: GenerateRequest,
  chunk: GenerateChunk,
  end: GenerateEnd,
});
