/**
 * Generation through the official OpenAI SDK, with the `atlas` request options typed:
 * `client.chat.completions.create(…)` and `client.completions.create(…)` take OpenAI's own
 * parameters plus `atlas?: AtlasOptions`, and their answers (streamed chunks included) carry the
 * `atlas` response object's type. They are `client.openai`'s methods, unchanged at run time (the
 * SDK sends body fields it does not know as they are); only the types are wider. Errors are the
 * SDK's (`OpenAI.APIError`, whose `error` is the same OpenAI-format body as an `AtlasError`'s).
 *
 * @module
 */
import type OpenAI from "openai";
import type { APIPromise } from "openai/core/api-promise";
import type { Stream } from "openai/core/streaming";
import type { AtlasOptions, AtlasResponse } from "./schemas.ts";

type RequestOptions = Parameters<OpenAI["chat"]["completions"]["create"]>[1];

/** OpenAI's parameters plus the `atlas` extension. */
export type WithAtlas<P> = P & { atlas?: AtlasOptions };
/** An answer with the `atlas` object (present when the request carried `atlas`). */
export type WithAtlasResponse<R> = R & { atlas?: AtlasResponse };

/** A chat completion, with `atlas`. */
export type AtlasChatCompletion = WithAtlasResponse<OpenAI.ChatCompletion>;
/** A chat stream's chunk; the last one (`stream_options.include_usage`) carries `atlas`. */
export type AtlasChatCompletionChunk = WithAtlasResponse<OpenAI.ChatCompletionChunk>;
/** A text completion, with `atlas`. */
export type AtlasCompletion = WithAtlasResponse<OpenAI.Completion>;

/** `client.chat.completions`. */
export interface AtlasChatCompletions {
  create(body: WithAtlas<OpenAI.ChatCompletionCreateParamsNonStreaming>, options?: RequestOptions): APIPromise<AtlasChatCompletion>;
  create(
    body: WithAtlas<OpenAI.ChatCompletionCreateParamsStreaming>,
    options?: RequestOptions,
  ): APIPromise<Stream<AtlasChatCompletionChunk>>;
  create(
    body: WithAtlas<OpenAI.ChatCompletionCreateParams>,
    options?: RequestOptions,
  ): APIPromise<Stream<AtlasChatCompletionChunk> | AtlasChatCompletion>;
}

/** `client.completions`. */
export interface AtlasCompletions {
  create(body: WithAtlas<OpenAI.CompletionCreateParamsNonStreaming>, options?: RequestOptions): APIPromise<AtlasCompletion>;
  create(body: WithAtlas<OpenAI.CompletionCreateParamsStreaming>, options?: RequestOptions): APIPromise<Stream<AtlasCompletion>>;
  create(body: WithAtlas<OpenAI.CompletionCreateParams>, options?: RequestOptions): APIPromise<Stream<AtlasCompletion> | AtlasCompletion>;
}

/** The SDK's chat completions, typed with `atlas`. */
export function atlasChat(openai: OpenAI): { completions: AtlasChatCompletions } {
  // The SDK's `create` sends the whole body, `atlas` included; only its declared type lacks it.
  const completions = { create: (body: unknown, options?: RequestOptions) => openai.chat.completions.create(body as never, options) };
  return { completions: completions as unknown as AtlasChatCompletions };
}

/** The SDK's text completions, typed with `atlas`. */
export function atlasCompletions(openai: OpenAI): AtlasCompletions {
  const completions = { create: (body: unknown, options?: RequestOptions) => openai.completions.create(body as never, options) };
  return completions as unknown as AtlasCompletions;
}
