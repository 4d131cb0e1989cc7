/**
 * Token log-probabilities through the official `openai` client, against a real cluster (a real
 * nats-server, a worker on the generated tiny llama model, the api over HTTP): chat
 * (`logprobs`, `top_logprobs`) and legacy completions (`logprobs`), streamed and not, `n > 1`
 * and prompt lists. Every answer also parses, unchanged, with the response schemas the OpenAPI
 * document publishes (`services/api/src/openai/responses.ts`).
 *
 * What makes the numbers real and not decoration: under greedy decoding (temperature 0) the
 * sampled token is the most likely one, so it must be the first alternative with the same
 * log-probability; alternatives come most likely first; and the tokens' bytes spell the answer.
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import { ChatCompletion, ChatCompletionChunk, TextCompletion, TextCompletionChunk } from "../services/api/src/openai/responses.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;
let client: OpenAI;
const MODEL = "atlas-tiny";

beforeAll(async () => {
  stack = await startStack({ services: ["worker", "api"] });
  client = new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30_000 });
});
afterAll(async () => stack?.close());

/** The body parses with the published schema and nothing is lost or added by the parse. */
function conforms<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const parsed = schema.parse(body);
  expect(parsed).toEqual(body);
  return parsed;
}

type Entry = { token: string; logprob: number; bytes: number[] | null; top_logprobs?: { token: string; logprob: number }[] };

/** The UTF-8 text the tokens' bytes spell. */
function spelled(entries: readonly Entry[]): string {
  return Buffer.from(entries.flatMap((e) => e.bytes ?? [])).toString("utf8");
}

function expectRanked(entries: readonly Entry[], top: number, greedy: boolean): void {
  for (const e of entries) {
    expect(e.logprob).toBeLessThanOrEqual(0);
    const alts = e.top_logprobs ?? [];
    expect(alts).toHaveLength(top);
    for (let i = 1; i < alts.length; i++) expect(alts[i]?.logprob).toBeLessThanOrEqual(alts[i - 1]?.logprob ?? 0);
    if (greedy && top > 0) {
      expect(alts[0]?.token).toBe(e.token);
      expect(alts[0]?.logprob).toBeCloseTo(e.logprob, 6);
    }
  }
}

describe("chat logprobs", () => {
  const messages = [{ role: "user" as const, content: "Count to five." }];

  it("reports every generated token with its top alternatives, greedy = the most likely", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 12,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    conforms(ChatCompletion, r);
    const choice = r.choices[0];
    const content = choice?.logprobs?.content ?? [];
    expect(choice?.logprobs?.refusal).toBeNull();
    expect(content.length).toBeGreaterThan(0);
    expect(content.length).toBeLessThanOrEqual(r.usage?.completion_tokens ?? 0);
    expect(spelled(content)).toBe(choice?.message.content);
    expectRanked(content, 3, true);
  });

  it("without top_logprobs gives each token's own logprob and no alternatives; without logprobs, null", async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0, logprobs: true });
    const content = r.choices[0]?.logprobs?.content ?? [];
    expect(content.length).toBeGreaterThan(0);
    expectRanked(content, 0, true);
    const plain = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 8, temperature: 0 });
    expect(plain.choices[0]?.logprobs).toBeNull();
    expect(plain.choices[0]?.message.content).toBe(r.choices[0]?.message.content);
  });

  it("streams each delta's tokens; together they equal the non-streamed answer's", async () => {
    const args = { model: MODEL, messages, max_tokens: 16, temperature: 0, logprobs: true, top_logprobs: 2 } as const;
    const whole = await client.chat.completions.create(args);
    const stream = await client.chat.completions.create({ ...args, stream: true });
    const streamed: Entry[] = [];
    let text = "";
    for await (const event of stream) {
      conforms(ChatCompletionChunk, event);
      const c = event.choices[0];
      if (c?.delta.content) {
        text += c.delta.content;
        expect(c.logprobs).not.toBeNull();
      }
      streamed.push(...(c?.logprobs?.content ?? []));
    }
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(streamed).toEqual(whole.choices[0]?.logprobs?.content);
  });

  it("gives each of n sampled choices its own tokens", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 10,
      temperature: 1,
      seed: 11,
      n: 2,
      logprobs: true,
      top_logprobs: 5,
    });
    conforms(ChatCompletion, r);
    expect(r.choices).toHaveLength(2);
    for (const c of r.choices) {
      const content = c.logprobs?.content ?? [];
      expect(spelled(content)).toBe(c.message.content);
      expectRanked(content, Math.min(5, content[0]?.top_logprobs?.length ?? 0), false);
    }
  });

  it("refuses top_logprobs without logprobs, and more than 20", async () => {
    await expect(client.chat.completions.create({ model: MODEL, messages, max_tokens: 1, top_logprobs: 2 })).rejects.toMatchObject({
      status: 400,
      param: "top_logprobs",
    });
    await expect(
      client.chat.completions.create({ model: MODEL, messages, max_tokens: 1, logprobs: true, top_logprobs: 21 }),
    ).rejects.toMatchObject({ status: 400, param: "top_logprobs" });
  });
});

describe("completion logprobs", () => {
  it("reports tokens, logprobs, alternatives with the sampled token, and offsets, per prompt", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: ["Once upon", "The sky is"],
      max_tokens: 8,
      temperature: 0,
      logprobs: 2,
    });
    conforms(TextCompletion, r);
    expect(r.choices).toHaveLength(2);
    for (const c of r.choices) {
      const lp = c.logprobs;
      expect(lp).not.toBeNull();
      const tokens = lp?.tokens ?? [];
      expect(tokens.length).toBeGreaterThan(0);
      expect(lp?.token_logprobs).toHaveLength(tokens.length);
      expect(tokens.join("")).toBe(c.text);
      let at = 0;
      tokens.forEach((token, i) => {
        expect(lp?.text_offset?.[i]).toBe(at);
        at += token.length;
        const top = lp?.top_logprobs?.[i] ?? {};
        expect(Object.keys(top).length).toBeLessThanOrEqual(3);
        expect(top[token]).toBeCloseTo(lp?.token_logprobs?.[i] ?? Number.NaN, 6);
        // Greedy: no alternative is more likely than the sampled token.
        for (const v of Object.values(top)) expect(v).toBeLessThanOrEqual((lp?.token_logprobs?.[i] ?? 0) + 1e-6);
      });
    }
  });

  it("streams deltas whose offsets continue the choice's text", async () => {
    const stream = await client.completions.create({
      model: MODEL,
      prompt: "Once upon",
      max_tokens: 12,
      temperature: 0,
      logprobs: 1,
      stream: true,
    });
    let text = "";
    for await (const event of stream) {
      conforms(TextCompletionChunk, event);
      const c = event.choices[0];
      if (c === undefined || c.text === "") continue;
      expect(c.logprobs?.text_offset?.[0]).toBe(text.length);
      expect(c.logprobs?.tokens?.join("")).toBe(c.text);
      text += c.text;
    }
    expect(text.length).toBeGreaterThan(0);
  });

  it("refuses logprobs over 5 and logprobs with echo, naming the parameter", async () => {
    await expect(client.completions.create({ model: MODEL, prompt: "Hi", max_tokens: 1, logprobs: 6 })).rejects.toMatchObject({
      status: 400,
      param: "logprobs",
    });
    await expect(client.completions.create({ model: MODEL, prompt: "Hi", max_tokens: 1, logprobs: 1, echo: true })).rejects.toMatchObject({
      status: 400,
      param: "logprobs",
    });
  });
});
