/**
 * `POST /v1/chat/completions`: OpenAI's chat API on the cluster's workers.
 *
 * @module
 */
import type { EngineMessage, GenerateRequest } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { guardGeneration } from "../guard.ts";
import { estimateTokens, recallMemory } from "../memory/recall.ts";
import { traceMemory } from "../metrics/recorder.ts";
import { jsonOrEventStream, Tag } from "../openapi.ts";
import {
  abortOnDisconnect,
  atlasObject,
  checkAtlas,
  checkMessageCount,
  completionId,
  resolveModel,
  samplingOf,
  systemFingerprint,
  usageOf,
  usedTokens,
} from "./common.ts";
import { chatLogprobs } from "./logprobs.ts";
import { ChatCompletion, ChatCompletionChunk } from "./responses.ts";
import { ChatCompletionRequest, stopList } from "./schemas.ts";
import { collect, placementOf, streamJobs } from "./stream.ts";
import { engineMessages, finishReason, replyMessage, streamedCalls, toolSetup } from "./tools.ts";

/** Registers the chat completions route. */
export async function chatRoutes(app: FastifyInstance): Promise<void> {
  const schema = {
    tags: [Tag.openai],
    summary: "Create a chat completion",
    description:
      "OpenAI's chat completions, streamed (`stream: true`, Server-Sent Events) or not; `atlas` adds session memory and cache options.",
    body: ChatCompletionRequest,
    response: jsonOrEventStream(
      ChatCompletion,
      ChatCompletionChunk,
      "A `chat.completion`; with `stream: true`, Server-Sent Events of `chat.completion.chunk` objects, then `data: [DONE]`",
    ),
  };
  app.withTypeProvider<ZodTypeProvider>().post("/v1/chat/completions", { schema }, async (req, reply) => {
    const startedAt = performance.now();
    const body = req.body;
    checkAtlas(app, body.atlas);
    checkMessageCount(app, body.messages.length);
    const ac = abortOnDisconnect(req, reply);
    const model = await resolveModel(app, body.model, ac.signal);
    const messages: EngineMessage[] = engineMessages(body.messages);
    const tools = toolSetup(body);
    const stop = stopList(body.stop);
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    const n = body.n ?? 1;
    // Limits before any work: max_tokens within the context, token rate, admission (docs/security.md).
    await guardGeneration(app, req, reply, {
      ctxSize: model.ctx_size,
      maxTokens,
      maxTokensParam: body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens",
      defaultMaxTokens: Math.floor(model.ctx_size / 4),
      sequences: n,
      promptTokens: estimateTokens(messages),
      session: body.atlas?.session_id,
      actual: () => usedTokens(req, (ends) => ends[0]?.usage.prompt_tokens ?? 0),
      signal: ac.signal,
    });
    // Session memory: recalled history before the new messages; the exchange is appended after (docs/memory.md).
    const recallStart = performance.now();
    const memory = await recallMemory(app, req, reply, { atlas: body.atlas, model, messages, maxTokens, signal: ac.signal });
    traceMemory(req, performance.now() - recallStart);
    const withLogprobs = body.logprobs === true;
    const jobs: GenerateRequest[] = Array.from({ length: n }, (_, i) => ({
      request_id: `${req.id}/${i}`,
      model: model.id,
      messages: memory.messages,
      sampling: samplingOf(body, maxTokens, stop, i),
      response_format: body.response_format ?? { type: "text" },
      ...(withLogprobs ? { logprobs: body.top_logprobs ?? 0 } : {}),
      ...tools.request,
      ...(i === 0 && memory.fresh ? { session_fresh: true } : {}),
      ...(memory.history === undefined ? {} : { history: memory.history }),
    }));
    const placement = placementOf(req, body.atlas);
    const id = completionId("chatcmpl");
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: "chat.completion.chunk" as const, created, model: model.id, system_fingerprint: systemFingerprint(model) };

    if (body.stream === true) {
      const withUsage = body.stream_options?.include_usage === true;
      const usageNull = withUsage ? { usage: null } : {};
      await streamJobs(app, reply, jobs, {
        signal: ac.signal,
        requestId: req.id,
        placement,
        shape: memory.tap({
          start: (index): ChatCompletionChunk => ({
            ...head,
            choices: [{ index, delta: { role: "assistant", content: "", refusal: null }, logprobs: null, finish_reason: null }],
            ...usageNull,
          }),
          delta: (index, chunk): ChatCompletionChunk => ({
            ...head,
            choices: [
              {
                index,
                delta: { ...(chunk.text === "" ? {} : { content: chunk.text }), ...streamedCalls(chunk.tool_calls, tools.legacy) },
                logprobs: withLogprobs ? chatLogprobs(chunk.logprobs) : null,
                finish_reason: null,
              },
            ],
            ...usageNull,
          }),
          finish: (index, end): ChatCompletionChunk => ({
            ...head,
            choices: [{ index, delta: {}, logprobs: null, finish_reason: finishReason(end.finish_reason, tools.legacy) }],
            ...usageNull,
          }),
          ...(withUsage
            ? {
                usage: (outcomes): ChatCompletionChunk => ({
                  ...head,
                  choices: [],
                  usage: usageOf(
                    outcomes.map((o) => o.end),
                    outcomes[0]?.end.usage.prompt_tokens ?? 0,
                  ),
                  ...atlasObject(body.atlas, outcomes, startedAt, memory.recalled),
                }),
              }
            : {}),
        }),
      });
      memory.commit();
      return; // the stream has ended (the reply was hijacked)
    }

    const outcomes = await collect(app, reply, jobs, { signal: ac.signal, requestId: req.id, placement });
    memory.commit(outcomes[0]);
    const ends = outcomes.map((o) => o.end);
    const completion: ChatCompletion = {
      id,
      object: "chat.completion",
      created,
      model: model.id,
      system_fingerprint: head.system_fingerprint,
      choices: outcomes.map((o, index) => ({
        index,
        message: replyMessage(o.text, o.end.tool_calls, tools.legacy),
        logprobs: withLogprobs ? chatLogprobs(o.logprobs) : null,
        finish_reason: finishReason(o.end.finish_reason, tools.legacy),
      })),
      usage: usageOf(ends, ends[0]?.usage.prompt_tokens ?? 0),
      service_tier: "default",
      ...atlasObject(body.atlas, outcomes, startedAt, memory.recalled),
    };
    return completion;
  });
}
