/**
 * Success bodies of the OpenAI endpoints, as zod schemas: the `chat.completion` and
 * `text_completion` objects, the chunks of their event streams, `usage` and the `atlas` response
 * object. `chat.ts`, `completions.ts` and `common.ts` build them typed with these schemas'
 * `z.infer`, so the code and the OpenAPI document cannot drift apart; `test/openapi.test.ts`
 * parses real answers with them.
 *
 * Documentation and types only: a reply is never parsed, stripped or serialized by these
 * (fastify's `JSON.stringify`, `openapi.ts`). In the document they are the output side of zod's
 * JSON Schema, so objects are `additionalProperties: false`: exactly the fields this version sends.
 *
 * @module
 */
import { AtlasResponse, GenerateEnd } from "@atlas/contracts";
import { z } from "zod";

const count = z.number().int().nonnegative();

/** Why a completion choice ended: a stop (end of sequence or a `stop` string) or `max_tokens`. */
export const FinishReason = z.enum(["stop", "length"]);

/** Why a chat choice ended: also `tool_calls` (`function_call` in the legacy functions API). */
export const ChatFinishReason = z.enum([...GenerateEnd.shape.finish_reason.options, "function_call"]);
/** Why a chat choice ended. */
export type ChatFinishReason = z.infer<typeof ChatFinishReason>;

/** A call in a reply, OpenAI's shape (arguments: JSON text that parses against the function's schema). */
const ReplyToolCall = z.object({
  id: z.string(),
  type: z.literal("function"),
  function: z.object({ name: z.string(), arguments: z.string() }),
});

/** The legacy API's call. */
const ReplyFunctionCall = z.object({ name: z.string(), arguments: z.string() });

/** A chat stream's delta. */
export const ChatDelta = z.object({
  role: z.literal("assistant").optional(),
  content: z.string().optional(),
  refusal: z.null().optional(),
  /** Pieces of calls: the first piece of a call has `id`, `type` and `function.name`; every piece a part of `arguments`. */
  tool_calls: z
    .array(
      z.object({
        index: count,
        id: z.string().optional(),
        type: z.literal("function").optional(),
        function: z.object({ name: z.string().optional(), arguments: z.string() }),
      }),
    )
    .optional(),
  function_call: z.object({ name: z.string().optional(), arguments: z.string() }).optional(),
});
/** A chat stream's delta. */
export type ChatDelta = z.infer<typeof ChatDelta>;

/** OpenAI's `usage`, with its `*_details` objects (the prompt is counted once per prompt). */
export const Usage = z.object({
  prompt_tokens: count,
  completion_tokens: count,
  total_tokens: count,
  prompt_tokens_details: z.object({
    cached_tokens: count.describe("Prompt tokens the slot already held (not evaluated again)"),
    audio_tokens: count,
  }),
  completion_tokens_details: z.object({
    reasoning_tokens: count,
    audio_tokens: count,
    accepted_prediction_tokens: count,
    rejected_prediction_tokens: count,
  }),
});
/** OpenAI's `usage`. */
export type Usage = z.infer<typeof Usage>;

// The `atlas` response object is shared with `@atlas/client` (libs/contracts/src/atlas_http.ts).
export { AtlasResponse };

/** One token with its log-probability, as OpenAI's chat reports it (`bytes`: its UTF-8 bytes). */
const ChatTokenChoice = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.number().int().min(0).max(255)) });

/** A chat choice's `logprobs` when asked for (`logprobs: true`, `top_logprobs` alternatives each). */
export const ChatLogprobs = z.object({
  content: z.array(ChatTokenChoice.extend({ top_logprobs: z.array(ChatTokenChoice) })),
  refusal: z.null(),
});
/** A chat choice's `logprobs`. */
export type ChatLogprobs = z.infer<typeof ChatLogprobs>;

/**
 * A legacy completion choice's `logprobs` (`logprobs: 0–5`): per token its text, ln p, the
 * most likely alternatives with the sampled token (up to `logprobs` + 1 entries) and its
 * character offset in the choice's text.
 */
export const TextLogprobs = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number()),
  top_logprobs: z.array(z.record(z.string(), z.number())),
  text_offset: z.array(count),
});
/** A legacy completion choice's `logprobs`. */
export type TextLogprobs = z.infer<typeof TextLogprobs>;

/** The fields every completion object and stream chunk starts with (`chat.ts`, `completions.ts`: `head`). */
const head = <O extends string>(object: O, id: string) => ({
  id: z.string().describe(id),
  object: z.literal(object),
  created: z.number().int().describe("Unix time, seconds"),
  model: z.string(),
  system_fingerprint: z.string().describe("`fp_` and the start of the model's fingerprint"),
});

/** `POST /v1/chat/completions`, not streamed. */
export const ChatCompletion = z.object({
  ...head("chat.completion", "`chatcmpl-…`"),
  choices: z.array(
    z.object({
      index: count,
      message: z.object({
        role: z.literal("assistant"),
        content: z.string().nullable().describe("null when the reply is only tool calls"),
        refusal: z.null(),
        annotations: z.array(z.never()),
        tool_calls: z.array(ReplyToolCall).optional(),
        function_call: ReplyFunctionCall.optional().describe("Legacy `functions` API"),
      }),
      logprobs: ChatLogprobs.nullable().describe("With `logprobs: true`, else null"),
      finish_reason: ChatFinishReason,
    }),
  ),
  usage: Usage,
  service_tier: z.literal("default"),
  atlas: AtlasResponse.optional(),
});
/** `POST /v1/chat/completions`, not streamed. */
export type ChatCompletion = z.infer<typeof ChatCompletion>;

/**
 * One event of a chat stream: per choice a role delta, content deltas, a finish; with
 * `stream_options.include_usage` a last chunk with `choices: []`, `usage` (null before it) and `atlas`.
 */
export const ChatCompletionChunk = z
  .object({
    ...head("chat.completion.chunk", "`chatcmpl-…`, the same in every event of the stream"),
    choices: z.array(
      z.object({
        index: count,
        delta: ChatDelta,
        logprobs: ChatLogprobs.nullable().describe("The delta's tokens, with `logprobs: true`; else null"),
        finish_reason: ChatFinishReason.nullable(),
      }),
    ),
    usage: Usage.nullable().optional(),
    atlas: AtlasResponse.optional(),
  })
  .describe("The `data` of one event (then `data: [DONE]`); an error after the stream started is one last event in OpenAI's error shape");
/** One event of a chat stream. */
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunk>;

const textChoice = z.object({
  text: z.string(),
  index: count.describe("prompt index × n + i"),
  logprobs: TextLogprobs.nullable().describe("With `logprobs`, else null"),
});

/** `POST /v1/completions`, not streamed. */
export const TextCompletion = z.object({
  ...head("text_completion", "`cmpl-…`"),
  choices: z.array(textChoice.extend({ finish_reason: FinishReason })),
  usage: Usage,
  atlas: AtlasResponse.optional(),
});
/** `POST /v1/completions`, not streamed. */
export type TextCompletion = z.infer<typeof TextCompletion>;

/**
 * One event of a completions stream: text deltas (with `echo`, first the prompt), a finish per
 * choice; with `stream_options.include_usage` a last chunk with `choices: []`, `usage` and `atlas`.
 */
export const TextCompletionChunk = TextCompletion.extend({
  choices: z.array(textChoice.extend({ finish_reason: FinishReason.nullable() })),
  usage: Usage.optional(),
}).describe("The `data` of one event (then `data: [DONE]`); an error after the stream started is one last event in OpenAI's error shape");
/** One event of a completions stream. */
export type TextCompletionChunk = z.infer<typeof TextCompletionChunk>;
