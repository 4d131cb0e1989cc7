/**
 * `POST /v1/completions`: OpenAI's legacy completions API; `prompt` is a string or a list, and
 * each prompt gets `n` choices (choice index = prompt index × n + i, as OpenAI numbers them).
 *
 * @module
 */
import type { GenerateEnd, GenerateRequest } from "@atlas/contracts";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { apiError } from "../errors.ts";
import { guardGeneration } from "../guard.ts";
import { estimateTokens } from "../memory/recall.ts";
import { jsonOrEventStream, Tag } from "../openapi.ts";
import {
  abortOnDisconnect,
  atlasObject,
  checkAtlas,
  completionId,
  MAX_SEQUENCES,
  resolveModel,
  samplingOf,
  systemFingerprint,
  usageOf,
  usedTokens,
} from "./common.ts";
import { textLogprobs } from "./logprobs.ts";
import { TextCompletion, TextCompletionChunk } from "./responses.ts";
import { CompletionRequest, stopList } from "./schemas.ts";
import { collect, placementOf, streamJobs } from "./stream.ts";

/** Registers the completions route. */
export async function completionRoutes(app: FastifyInstance): Promise<void> {
  const schema = {
    tags: [Tag.openai],
    summary: "Create a completion",
    description: "OpenAI's (legacy) completions: one or more prompts, streamed or not.",
    body: CompletionRequest,
    response: jsonOrEventStream(
      TextCompletion,
      TextCompletionChunk,
      "A `text_completion`; with `stream: true`, Server-Sent Events of `text_completion` chunks, then `data: [DONE]`",
    ),
  };
  app.withTypeProvider<ZodTypeProvider>().post("/v1/completions", { schema }, async (req, reply) => {
    const startedAt = performance.now();
    const body = req.body;
    checkAtlas(app, body.atlas);
    const ac = abortOnDisconnect(req, reply);
    const model = await resolveModel(app, body.model, ac.signal);
    const prompts = typeof body.prompt === "string" ? [body.prompt] : body.prompt;
    const n = body.n ?? 1;
    if (prompts.length * n > MAX_SEQUENCES) {
      const message = `Invalid request at 'n': ${prompts.length} prompts × n ${n} is ${prompts.length * n} sequences, more than the ${MAX_SEQUENCES} one request may run.`;
      throw apiError("invalid_value", { message }, { param: "n" });
    }
    const stop = stopList(body.stop);
    // The prompt counts once per prompt, however many choices it has.
    const promptTokens = (ends: { usage: { prompt_tokens: number } }[]) =>
      ends.reduce((sum, e, i) => (i % n === 0 ? sum + e.usage.prompt_tokens : sum), 0);
    // Limits before any work: max_tokens within the context, token rate, admission (docs/security.md).
    await guardGeneration(app, req, reply, {
      ctxSize: model.ctx_size,
      maxTokens: body.max_tokens,
      maxTokensParam: "max_tokens",
      defaultMaxTokens: 16,
      sequences: prompts.length * n,
      promptTokens: estimateTokens(prompts.map((content) => ({ content }))),
      session: body.atlas?.session_id,
      actual: () => usedTokens(req, promptTokens),
      signal: ac.signal,
    });
    const logprobs = body.logprobs ?? undefined;
    const jobs: GenerateRequest[] = prompts.flatMap((prompt, p) =>
      Array.from({ length: n }, (_, i) => ({
        request_id: `${req.id}/${p * n + i}`,
        model: model.id,
        prompt,
        sampling: samplingOf(body, body.max_tokens ?? 16, stop, i),
        ...(logprobs === undefined ? {} : { logprobs }),
      })),
    );
    const echo = (index: number) => (body.echo === true ? (prompts[Math.floor(index / n)] ?? "") : "");
    const placement = placementOf(req, body.atlas);
    const id = completionId("cmpl");
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: "text_completion" as const, created, model: model.id, system_fingerprint: systemFingerprint(model) };

    if (body.stream === true) {
      const withUsage = body.stream_options?.include_usage === true;
      const offsets: number[] = [];
      await streamJobs(app, reply, jobs, {
        signal: ac.signal,
        requestId: req.id,
        placement,
        shape: {
          ...(body.echo === true
            ? {
                start: (index: number): TextCompletionChunk => ({
                  ...head,
                  choices: [{ text: echo(index), index, logprobs: null, finish_reason: null }],
                }),
              }
            : {}),
          delta: (index, chunk): TextCompletionChunk => {
            // Each delta's offsets continue its choice's text (after the echoed prompt).
            const at = offsets[index] ?? echo(index).length;
            offsets[index] = at + chunk.text.length;
            const lp = logprobs === undefined ? null : textLogprobs(chunk.logprobs, at);
            return { ...head, choices: [{ text: chunk.text, index, logprobs: lp, finish_reason: null }] };
          },
          finish: (index, end): TextCompletionChunk => ({
            ...head,
            choices: [{ text: "", index, logprobs: null, finish_reason: textFinish(end.finish_reason) }],
          }),
          ...(withUsage
            ? {
                usage: (outcomes): TextCompletionChunk => {
                  const ends = outcomes.map((o) => o.end);
                  return {
                    ...head,
                    choices: [],
                    usage: usageOf(ends, promptTokens(ends)),
                    ...atlasObject(body.atlas, outcomes, startedAt),
                  };
                },
              }
            : {}),
        },
      });
      return; // the stream has ended (the reply was hijacked)
    }

    const outcomes = await collect(app, reply, jobs, { signal: ac.signal, requestId: req.id, placement });
    const ends = outcomes.map((o) => o.end);
    const completion: TextCompletion = {
      ...head,
      choices: outcomes.map((o, index) => ({
        text: echo(index) + o.text,
        index,
        logprobs: logprobs === undefined ? null : textLogprobs(o.logprobs, echo(index).length),
        finish_reason: textFinish(o.end.finish_reason),
      })),
      usage: usageOf(ends, promptTokens(ends)),
      ...atlasObject(body.atlas, outcomes, startedAt),
    };
    return completion;
  });
}

/** A completion has no tools: its sequences end by a stop or by `max_tokens`. */
function textFinish(reason: GenerateEnd["finish_reason"]): "stop" | "length" {
  return reason === "length" ? "length" : "stop";
}
