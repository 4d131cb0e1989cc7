/**
 * The proxy backend's translation between ATLAS's generate contract (`GenerateRequest`,
 * `GenerateChunk`, `GenerateEnd` in `libs/contracts/src/worker.ts`) and an OpenAI-compatible
 * server's streamed chat completions and completions: the request body sent upstream, the
 * upstream's SSE chunks (validated here, the edge) turned into chunks and an end, and the
 * upstream's errors into `BusError`s. Pure functions and one accumulator; `proxy_engine.ts` does
 * the I/O.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import type { GenerateChunk, TokenLogprob, ToolCall, ToolCallDelta } from "@atlas/contracts";
import { z } from "zod";
import type { EngineRequest } from "./engine_types.ts";

/**
 * What the upstream is, as discovery found it: `llama-server` takes its own extensions
 * (`id_slot`, `cache_prompt`, `ignore_eos`), `atlas` takes `ignore_eos`, `openai` (anything
 * else) only OpenAI's fields.
 */
export type UpstreamKind = "llama-server" | "atlas" | "openai";

/** A streamed request body for the upstream: a chat completion or a completion. */
export interface UpstreamCall {
  readonly endpoint: "chat" | "completion";
  readonly body: Record<string, unknown>;
}

/** Builds the upstream request for one sequence; refuses what this upstream cannot do. */
export function upstreamCall(req: EngineRequest, model: string, kind: UpstreamKind, slot: number): UpstreamCall {
  const s = req.sampling;
  const body: Record<string, unknown> = {
    model,
    stream: true,
    stream_options: { include_usage: true },
    temperature: s.temperature,
    top_p: s.top_p,
    presence_penalty: s.presence_penalty,
    frequency_penalty: s.frequency_penalty,
    ...(s.seed === undefined ? {} : { seed: s.seed }),
    ...(s.max_tokens === undefined ? {} : { max_tokens: s.max_tokens }),
    ...(s.stop.length === 0 ? {} : { stop: s.stop }),
  };
  if (s.ignore_eos) {
    if (kind === "openai") throw unsupported("ignore_eos", "ignore_eos");
    body.ignore_eos = true;
  }
  // llama-server runs the sequence on the slot the scheduler leased here, so a session's turns
  // find their tokens in its prompt cache (the upstream's KV affinity follows the pool's).
  if (kind === "llama-server") Object.assign(body, { id_slot: slot, cache_prompt: true });
  if (req.messages === undefined) {
    if (req.response_format.type !== "text") throw unsupported("response_format with a prompt", "response_format");
    body.prompt = req.prompt ?? "";
    if (req.logprobs !== undefined) body.logprobs = req.logprobs;
    return { endpoint: "completion", body };
  }
  body.messages = req.messages.map((m) => ({
    role: m.role,
    // An assistant turn that only called tools has no text (OpenAI: null).
    content: m.tool_calls !== undefined && m.content === "" ? null : m.content,
    ...(m.tool_calls === undefined ? {} : { tool_calls: m.tool_calls }),
    ...(m.tool_call_id === undefined ? {} : { tool_call_id: m.tool_call_id }),
  }));
  if (req.response_format.type !== "text") body.response_format = req.response_format;
  if (req.logprobs !== undefined) Object.assign(body, { logprobs: true, top_logprobs: req.logprobs });
  if (req.tools !== undefined) {
    body.tools = req.tools.map((f) => ({ type: "function", function: f }));
    const choice = req.tool_choice;
    if (choice !== undefined)
      body.tool_choice = typeof choice === "string" ? choice : { type: "function", function: { name: choice.name } };
    if (req.parallel_tool_calls !== undefined) body.parallel_tool_calls = req.parallel_tool_calls;
  }
  return { endpoint: "chat", body };
}

function unsupported(what: string, param: string): BusError {
  return new BusError("bad_request", `This model is served by an OpenAI-compatible upstream that cannot do ${what}`, { param });
}

/** One alternative of a chat token's log-probability, as OpenAI streams it. */
const ChatTokenChoice = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int().min(0).max(255)).nullish() });

/** Token counts, with the cached prompt tokens where the upstream says them. */
const Usage = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int().nonnegative().nullish() }).nullish(),
});

/** llama-server's timings: `cache_n` is the prompt tokens its slot already held. */
const Timings = z.object({ cache_n: z.number().int().nonnegative().nullish() });

/** One streamed chat completion chunk: the fields the proxy reads (the rest is ignored). */
export const UpstreamChatChunk = z.object({
  choices: z
    .array(
      z.object({
        index: z.number().int().nonnegative().default(0),
        delta: z
          .object({
            content: z.string().nullish(),
            tool_calls: z
              .array(
                z.object({
                  index: z.number().int().nonnegative(),
                  id: z.string().nullish(),
                  function: z.object({ name: z.string().nullish(), arguments: z.string().nullish() }).nullish(),
                }),
              )
              .nullish(),
          })
          .nullish(),
        finish_reason: z.string().nullish(),
        logprobs: z
          .object({ content: z.array(ChatTokenChoice.extend({ top_logprobs: z.array(ChatTokenChoice).nullish() })).nullish() })
          .nullish(),
      }),
    )
    .default([]),
  usage: Usage.nullish(),
  timings: Timings.nullish(),
});

/** One streamed (legacy) completion chunk: the fields the proxy reads. */
export const UpstreamCompletionChunk = z.object({
  choices: z
    .array(
      z.object({
        index: z.number().int().nonnegative().default(0),
        text: z.string().nullish(),
        finish_reason: z.string().nullish(),
        logprobs: z
          .object({
            tokens: z.array(z.string()),
            token_logprobs: z.array(z.number().nullable()),
            top_logprobs: z.array(z.record(z.string(), z.number()).nullable()).nullish(),
          })
          .nullish(),
      }),
    )
    .default([]),
  usage: Usage.nullish(),
  timings: Timings.nullish(),
});

/** How the upstream sequence ended, once its stream is over. */
export interface UpstreamEnd {
  finish_reason: "stop" | "length" | "tool_calls";
  tool_calls?: ToolCall[];
  usage: { prompt_tokens: number; completion_tokens: number; cached_tokens: number };
}

const utf8 = new TextEncoder();
const bytesOf = (token: string, bytes: readonly number[] | null | undefined) =>
  bytes === null || bytes === undefined ? [...utf8.encode(token)] : [...bytes];

/**
 * Reads one upstream stream, chunk by chunk (`push` validates a parsed SSE `data` object and
 * returns the chunk to send on, if any), and says how it ended (`end`).
 */
export class StreamMapper {
  readonly #endpoint: "chat" | "completion";
  readonly #wantLogprobs: boolean;
  #finish: string | undefined;
  #usage: z.infer<typeof Usage> | undefined;
  #cacheN: number | undefined;
  #tokens = 0;
  readonly #calls = new Map<number, { id: string; name: string; arguments: string }>();

  constructor(endpoint: "chat" | "completion", wantLogprobs: boolean) {
    this.#endpoint = endpoint;
    this.#wantLogprobs = wantLogprobs;
  }

  /** Tokens the chunks carried so far (their logprobs entries, else one per piece of text or call). */
  get tokens(): number {
    return this.#tokens;
  }

  /** One upstream chunk; returns what to send on (nothing for a chunk without text or calls). */
  push(data: unknown): GenerateChunk | undefined {
    if (this.#endpoint === "chat") {
      const choice = this.#read(UpstreamChatChunk, data);
      return choice === undefined ? undefined : this.#chat(choice);
    }
    const choice = this.#read(UpstreamCompletionChunk, data);
    return choice === undefined ? undefined : this.#completion(choice);
  }

  /** Validates a chunk, keeps its usage and finish reason, and returns its first choice. */
  #read<S extends typeof UpstreamChatChunk | typeof UpstreamCompletionChunk>(
    schema: S,
    data: unknown,
  ): z.infer<S>["choices"][number] | undefined {
    const parsed = schema.safeParse(data);
    if (!parsed.success) {
      throw new BusError(
        "bad_reply",
        `The upstream sent a chunk that is not an OpenAI ${this.#endpoint} chunk: ${z.prettifyError(parsed.error)}`,
      );
    }
    const chunk = parsed.data;
    if (chunk.usage !== null && chunk.usage !== undefined) this.#usage = chunk.usage;
    if (chunk.timings?.cache_n !== null && chunk.timings?.cache_n !== undefined) this.#cacheN = chunk.timings.cache_n;
    const choice = (chunk.choices as z.infer<S>["choices"]).find((c) => c.index === 0);
    if (choice?.finish_reason !== null && choice?.finish_reason !== undefined) this.#finish = choice.finish_reason;
    return choice;
  }

  #chat(choice: z.infer<typeof UpstreamChatChunk>["choices"][number]): GenerateChunk | undefined {
    const text = choice.delta?.content ?? "";
    const calls: ToolCallDelta[] = (choice.delta?.tool_calls ?? []).map((d) => {
      const call = this.#calls.get(d.index) ?? { id: "", name: "", arguments: "" };
      if (d.id) call.id = d.id;
      if (d.function?.name) call.name = d.function.name;
      call.arguments += d.function?.arguments ?? "";
      this.#calls.set(d.index, call);
      return {
        index: d.index,
        ...(d.id ? { id: d.id } : {}),
        ...(d.function?.name ? { name: d.function.name } : {}),
        arguments: d.function?.arguments ?? "",
      };
    });
    const entries = choice.logprobs?.content ?? undefined;
    if (text === "" && calls.length === 0 && (entries === undefined || entries.length === 0)) return undefined;
    this.#checkLogprobs(text, entries !== undefined);
    const logprobs: TokenLogprob[] | undefined = entries?.map((e) => ({
      token: e.token,
      bytes: bytesOf(e.token, e.bytes),
      logprob: e.logprob,
      top: (e.top_logprobs ?? []).slice(0, 20).map((t) => ({ token: t.token, bytes: bytesOf(t.token, t.bytes), logprob: t.logprob })),
    }));
    const tokens = logprobs?.length ?? 1;
    this.#tokens += tokens;
    return {
      text,
      tokens,
      ...(logprobs === undefined || !this.#wantLogprobs ? {} : { logprobs }),
      ...(calls.length === 0 ? {} : { tool_calls: calls }),
    };
  }

  #completion(choice: z.infer<typeof UpstreamCompletionChunk>["choices"][number]): GenerateChunk | undefined {
    const text = choice.text ?? "";
    const lp = choice.logprobs ?? undefined;
    if (text === "" && (lp === undefined || lp.tokens.length === 0)) return undefined;
    this.#checkLogprobs(text, lp !== undefined);
    const logprobs: TokenLogprob[] | undefined = lp?.tokens.map((token, i) => ({
      token,
      bytes: bytesOf(token, undefined),
      logprob: lp.token_logprobs[i] ?? 0,
      top: Object.entries(lp.top_logprobs?.[i] ?? {})
        .sort((a, b) => b[1] - a[1])
        .slice(0, 20)
        .map(([t, logprob]) => ({ token: t, bytes: bytesOf(t, undefined), logprob })),
    }));
    const tokens = logprobs?.length ?? 1;
    this.#tokens += tokens;
    return { text, tokens, ...(logprobs === undefined || !this.#wantLogprobs ? {} : { logprobs }) };
  }

  /** Log-probabilities asked for and text without them: the upstream cannot give them. */
  #checkLogprobs(text: string, has: boolean): void {
    if (this.#wantLogprobs && text !== "" && !has) {
      throw new BusError("bad_request", "This model is served by an OpenAI-compatible upstream that does not return logprobs", {
        param: "logprobs",
      });
    }
  }

  /** How the sequence ended; a stream cut before its `finish_reason` is an error. */
  end(): UpstreamEnd {
    if (this.#finish === undefined) throw new BusError("unavailable", "The upstream's stream ended before the sequence finished");
    const calls: ToolCall[] = [...this.#calls.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([, c]) => ({
        id: c.id || `call_${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`,
        type: "function",
        function: { name: c.name, arguments: c.arguments },
      }));
    const finish =
      this.#finish === "length"
        ? "length"
        : this.#finish === "tool_calls" || this.#finish === "function_call" || calls.length > 0
          ? "tool_calls"
          : "stop";
    const u = this.#usage;
    const completion = u?.completion_tokens ?? this.#tokens;
    const prompt = u?.prompt_tokens ?? 0;
    const cached = Math.min(prompt, u?.prompt_tokens_details?.cached_tokens ?? this.#cacheN ?? 0);
    return {
      finish_reason: finish,
      ...(finish === "tool_calls" ? { tool_calls: calls } : {}),
      usage: { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached },
    };
  }
}

/** An OpenAI error body's fields (`{error: {...}}` over HTTP, or a stream's error event). */
const UpstreamErrorBody = z.object({
  message: z.string().nullish(),
  type: z.string().nullish(),
  code: z.union([z.string(), z.number()]).nullish(),
  param: z.string().nullish(),
});

/** What the proxy knows of a failed upstream call (the SDK's `APIError` fields). */
export interface UpstreamFailure {
  /** HTTP status; undefined for a connection failure or an error event inside the stream. */
  status: number | undefined;
  /** The error object the upstream sent, if any. */
  error: unknown;
  message: string;
  /** Seconds from the upstream's `Retry-After`, if it sent one. */
  retryAfterS?: number | undefined;
  /** The connection failed or timed out (nothing was answered). */
  connection?: "failed" | "timeout" | undefined;
}

/**
 * The `BusError` for an upstream failure: its client errors stay the client's (400 → `bad_request`
 * with the upstream's `param`), its overload is ours (429/503 → `overloaded`, retryable), a
 * connection that fails or a 5xx is `unavailable`. A 404 or a refused key (401/403) is the
 * proxy worker's configuration, not the client's request — ATLAS lists the model — so it is
 * `unavailable` (a server fault, retryable elsewhere) naming the upstream's problem; the worker
 * also turns `down` for it (`upstreamFault`).
 */
export function upstreamError(f: UpstreamFailure): BusError {
  const e = errorBody(f);
  const said = e.message ?? f.message;
  const text = `The upstream answered: ${said}`.slice(0, 2000);
  const param = e.param ?? null;
  const retry = f.retryAfterS === undefined ? {} : { retryAfterS: f.retryAfterS };
  if (f.connection === "timeout") return new BusError("timeout", `The upstream did not answer in time: ${f.message}`);
  if (f.connection === "failed") return new BusError("unavailable", `The upstream cannot be reached: ${f.message}`, { retryAfterS: 1 });
  const status = statusOf(f);
  if (status === 400 || status === 413 || status === 422) return new BusError("bad_request", text, { param });
  if (status === 404) {
    const why = "the proxy worker's ATLAS_UPSTREAM_URL or ATLAS_UPSTREAM_MODEL names a path or model it does not have";
    return new BusError("unavailable", `The upstream answered 404 (${why}): ${said}`.slice(0, 2000), retry);
  }
  if (status === 401 || status === 403) {
    const why = "it refused the proxy worker's ATLAS_UPSTREAM_API_KEY";
    return new BusError("unavailable", `The upstream answered ${status} (${why}): ${said}`.slice(0, 2000), retry);
  }
  if (status === 429 || status === 503) return new BusError("overloaded", text, { retryAfterS: f.retryAfterS ?? 1 });
  if (status !== undefined && status >= 500) return new BusError("unavailable", text, retry);
  return new BusError("internal", text);
}

/** Whether the failure is the proxy worker's configuration (404, 401, 403): its health turns `down`. */
export function upstreamFault(f: UpstreamFailure): boolean {
  if (f.connection !== undefined) return false;
  const status = statusOf(f);
  return status === 404 || status === 401 || status === 403;
}

function errorBody(f: UpstreamFailure): z.infer<typeof UpstreamErrorBody> {
  const body = UpstreamErrorBody.safeParse(f.error);
  return body.success ? body.data : {};
}

/** The failure's HTTP status, or for an error event in a stream the one its type says. */
function statusOf(f: UpstreamFailure): number | undefined {
  const e = errorBody(f);
  return f.status ?? statusOfType(e.type ?? undefined, e.code ?? undefined);
}

/** An HTTP status for an error event in a stream, from its OpenAI `type` (or code). */
function statusOfType(type: string | undefined, code: string | number | undefined): number | undefined {
  if (typeof code === "number") return code;
  switch (type) {
    case "invalid_request_error":
      return 400;
    case "not_found_error":
      return 404;
    case "rate_limit_error":
      return 429;
    case "server_error":
      return 500;
    default:
      return undefined;
  }
}
