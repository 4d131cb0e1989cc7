/**
 * `POST /v1/chat/completions`: OpenAI's chat API on the cluster's workers.
 *
 * @module
 */
import type { EngineMessage, GenerateRequest } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import { recallMemory } from "../memory/recall.ts";
import { traceMemory } from "../metrics/recorder.ts";
import {
  abortOnDisconnect,
  atlasObject,
  checkAtlas,
  completionId,
  parseBody,
  resolveModel,
  samplingOf,
  systemFingerprint,
  usageOf,
} from "./common.ts";
import { ChatCompletionRequest, contentText, stopList } from "./schemas.ts";
import { collect, placementOf, streamJobs } from "./stream.ts";

/** Registers the chat completions route. */
export async function chatRoutes(app: FastifyInstance): Promise<void> {
  app.post("/v1/chat/completions", async (req, reply) => {
    const startedAt = performance.now();
    const body = parseBody(ChatCompletionRequest, req.body);
    checkAtlas(app, body.atlas);
    const model = await resolveModel(app, body.model);
    const messages: EngineMessage[] = body.messages.map((m) => ({ role: m.role, content: contentText(m.content) }));
    const stop = stopList(body.stop);
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    // Session memory: recalled history before the new messages; the exchange is appended after (docs/memory.md).
    const recallStart = performance.now();
    const memory = await recallMemory(app, req, reply, { atlas: body.atlas, model, messages, maxTokens });
    traceMemory(req, performance.now() - recallStart);
    const jobs: GenerateRequest[] = Array.from({ length: body.n ?? 1 }, (_, i) => ({
      request_id: `${req.id}/${i}`,
      model: model.id,
      messages: memory.messages,
      sampling: samplingOf(body, maxTokens, stop, i),
      response_format: body.response_format ?? { type: "text" },
    }));
    const ac = abortOnDisconnect(req, reply);
    const placement = placementOf(req, body.atlas);
    const id = completionId("chatcmpl");
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: "chat.completion.chunk", created, model: model.id, system_fingerprint: systemFingerprint(model) };

    if (body.stream === true) {
      const withUsage = body.stream_options?.include_usage === true;
      const usageNull = withUsage ? { usage: null } : {};
      await streamJobs(app, reply, jobs, {
        signal: ac.signal,
        requestId: req.id,
        placement,
        shape: memory.tap({
          start: (index) => ({
            ...head,
            choices: [{ index, delta: { role: "assistant", content: "", refusal: null }, logprobs: null, finish_reason: null }],
            ...usageNull,
          }),
          delta: (index, text) => ({
            ...head,
            choices: [{ index, delta: { content: text }, logprobs: null, finish_reason: null }],
            ...usageNull,
          }),
          finish: (index, end) => ({
            ...head,
            choices: [{ index, delta: {}, logprobs: null, finish_reason: end.finish_reason }],
            ...usageNull,
          }),
          ...(withUsage
            ? {
                usage: (outcomes) => ({
                  ...head,
                  choices: [],
                  usage: usageOf(
                    outcomes.map((o) => o.end),
                    outcomes[0]?.end.usage.prompt_tokens ?? 0,
                  ),
                  ...atlasObject(body.atlas, outcomes, startedAt),
                }),
              }
            : {}),
        }),
      });
      memory.commit();
      return reply;
    }

    const outcomes = await collect(app, reply, jobs, { signal: ac.signal, requestId: req.id, placement });
    memory.commit(outcomes[0]);
    const ends = outcomes.map((o) => o.end);
    return {
      id,
      object: "chat.completion",
      created,
      model: model.id,
      system_fingerprint: head.system_fingerprint,
      choices: outcomes.map((o, index) => ({
        index,
        message: { role: "assistant", content: o.text, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: o.end.finish_reason,
      })),
      usage: usageOf(ends, ends[0]?.usage.prompt_tokens ?? 0),
      service_tier: "default",
      ...atlasObject(body.atlas, outcomes, startedAt),
    };
  });
}
