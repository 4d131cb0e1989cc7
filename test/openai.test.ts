/**
 * The OpenAI surface, through the official `openai` client, against a real cluster: a real
 * nats-server, real workers on the generated tiny llama model, the real api over HTTP.
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;
let client: OpenAI;
const MODEL = "atlas-tiny";

beforeAll(async () => {
  stack = await startStack({ services: ["worker", "api"], workers: 2 });
  client = new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30_000 });
});
afterAll(async () => stack?.close());

describe("models", () => {
  it("lists the served model and finds it by id", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([MODEL]);
    expect(list.data[0]).toMatchObject({ object: "model", owned_by: "atlas" });
    await expect(client.models.retrieve(MODEL)).resolves.toMatchObject({ id: MODEL, object: "model" });
    await expect(client.models.retrieve("nope")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe("chat completions", () => {
  it("answers a non-streamed chat with every field OpenAI's schema requires", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Say hello." },
      ],
      max_tokens: 24,
      temperature: 0,
    });
    expect(r.object).toBe("chat.completion");
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.system_fingerprint).toMatch(/^fp_/);
    const choice = r.choices[0];
    expect(choice?.message).toMatchObject({ role: "assistant", refusal: null });
    expect(typeof choice?.message.content).toBe("string");
    expect(choice?.logprobs).toBeNull();
    expect(["stop", "length"]).toContain(choice?.finish_reason);
    expect(r.usage?.prompt_tokens).toBeGreaterThan(5);
    expect(r.usage?.total_tokens).toBe((r.usage?.prompt_tokens ?? 0) + (r.usage?.completion_tokens ?? 0));
    expect(r.usage?.completion_tokens).toBeLessThanOrEqual(24);
    expect(r.usage?.prompt_tokens_details?.cached_tokens).toBeGreaterThanOrEqual(0);
  });

  it("streams a role chunk, deltas, a finish chunk and a usage chunk whose text equals the non-streamed answer", async () => {
    const args = {
      model: MODEL,
      messages: [{ role: "user" as const, content: "Tell me a story." }],
      max_tokens: 40,
      seed: 7,
      temperature: 0.8,
    };
    const whole = await client.chat.completions.create(args);
    const stream = await client.chat.completions.create({ ...args, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason != null);
    expect(finish).toHaveLength(1);
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage?.completion_tokens).toBe(whole.usage?.completion_tokens);
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    expect(text).toBe(whole.choices[0]?.message.content);
    expect(finish[0]?.choices[0]?.finish_reason).toBe(whole.choices[0]?.finish_reason);
  });

  it("gives the same text for the same seed and different text for another", async () => {
    const ask = (seed: number) =>
      client.chat.completions
        .create({
          model: MODEL,
          messages: [{ role: "user", content: "Write something long." }],
          max_tokens: 32,
          temperature: 1,
          seed,
          ignore_eos: true,
        } as never)
        .then((r) => (r as OpenAI.ChatCompletion).choices[0]?.message.content);
    const [a, b, c] = await Promise.all([ask(11), ask(11), ask(12)]);
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });

  it("returns n choices", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Hi" }],
      n: 3,
      max_tokens: 8,
      seed: 1,
    });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
  });

  it("honours json_schema: the output parses and matches the schema", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Give me a person as JSON." }],
      max_tokens: 200,
      temperature: 0.7,
      seed: 3,
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "person",
          strict: true,
          schema: {
            type: "object",
            properties: { name: { type: "string", maxLength: 20 }, age: { type: "integer" }, member: { type: "boolean" } },
            required: ["name", "age", "member"],
            additionalProperties: false,
          },
        },
      },
    });
    expect(r.choices[0]?.finish_reason).toBe("stop");
    const value = JSON.parse(r.choices[0]?.message.content ?? "");
    expect(typeof value.name).toBe("string");
    expect(Number.isInteger(value.age)).toBe(true);
    expect(typeof value.member).toBe("boolean");
    expect(Object.keys(value).sort()).toEqual(["age", "member", "name"]);
  });

  it("honours json_object: every answer is a JSON object that parses", async () => {
    // The grammar allows any object, so a random model could in principle write on to the
    // limit; with this much room these seeds all end, so every answer must be a whole object.
    const answers = [];
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      answers.push(
        await client.chat.completions.create({
          model: MODEL,
          messages: [{ role: "user", content: "JSON please" }],
          max_tokens: 900,
          seed,
          response_format: { type: "json_object" },
        }),
      );
    }
    const stops = answers.filter((r) => r.choices[0]?.finish_reason === "stop").length;
    expect(stops).toBe(answers.length);
    for (const r of answers) {
      const value: unknown = JSON.parse(r.choices[0]?.message.content ?? "");
      expect(value).toBeTypeOf("object");
      expect(value).not.toBeNull();
      expect(Array.isArray(value)).toBe(false);
    }
  });

  it("answers bad bodies with BadRequestError and unknown models with NotFoundError", async () => {
    const bad = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "x" }], temperature: 5 })
      .catch((e) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect(bad.param).toBe("temperature");
    expect(bad.type).toBe("invalid_request_error");
    await expect(client.chat.completions.create({ model: MODEL, messages: [] })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: "user", content: "x" }],
        tools: [{ type: "function", function: { name: "no spaces allowed" } }],
      }),
    ).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    const missing = await client.chat.completions.create({ model: "gpt-5", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect(missing.code).toBe("model_not_found");
  });

  it("refuses a prompt longer than the context with a 400 that names both lengths", async () => {
    const phrase = "lorem ipsum dolor sit amet ";
    const promptTokens = async (repeats: number) =>
      (await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: phrase.repeat(repeats) }], max_tokens: 1 }))
        .usage?.prompt_tokens ?? Number.NaN;
    // Each repetition costs the same tokens (every word piece starts at its space), so the long
    // prompt's length follows from two short ones; a third checks the step.
    const [one, two, three] = [await promptTokens(1), await promptTokens(2), await promptTokens(3)];
    const step = two - one;
    expect(step).toBeGreaterThan(0);
    expect(three - two).toBe(step);
    const repeats = 400;
    const expected = one + (repeats - 1) * step;
    const ctx = stack.config.ATLAS_CTX_SIZE;
    expect(expected).toBeGreaterThan(ctx);

    const err = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: phrase.repeat(repeats) }], max_tokens: 4 })
      .catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.param).toBe("messages");
    const numbers = (String(err.message).match(/\d+/g) ?? []).map(Number);
    expect(numbers).toContain(ctx);
    expect(numbers).toContain(expected);
  });
});

describe("completions", () => {
  it("answers a prompt list with n choices per prompt, numbered as OpenAI numbers them", async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: ["Once upon a time", "The answer is"],
      n: 2,
      max_tokens: 6,
      seed: 2,
    });
    expect(r.object).toBe("text_completion");
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    for (const c of r.choices) {
      expect(typeof c.text).toBe("string");
      expect(c.logprobs).toBeNull();
    }
    expect(r.usage?.completion_tokens).toBeLessThanOrEqual(24);
  });

  it("streams a completion with usage", async () => {
    const stream = await client.completions.create({
      model: MODEL,
      prompt: "Hello",
      max_tokens: 10,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const c of stream) {
      text += c.choices[0]?.text ?? "";
      if (c.usage) usage = c.usage;
    }
    expect(usage?.completion_tokens).toBeGreaterThanOrEqual(0);
    expect(typeof text).toBe("string");
  });
});

describe("workers", () => {
  it("spreads requests over both workers", async () => {
    const served = new Set<string>();
    for (let round = 0; round < 5 && served.size < 2; round++) {
      const rs = await Promise.all(
        Array.from({ length: 8 }, () =>
          fetch(`${stack.baseUrl}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 2, atlas: {} }),
          }).then((r) => r.json() as Promise<{ atlas: { workers: string[] } }>),
        ),
      );
      for (const r of rs) for (const w of r.atlas.workers) served.add(w);
    }
    expect([...served].sort()).toEqual(["worker-1", "worker-2"]);
  });
});
