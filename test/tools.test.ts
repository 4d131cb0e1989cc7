/**
 * Tools (function calling) through the official `openai` client, against a real cluster: a
 * real nats-server, persistence, a worker and the api over HTTP, on generated models that carry
 * the real chat templates of their families (`tokenizer.chat_template` in the GGUF): ChatML
 * (node-llama-cpp's generic call syntax), Llama 3.1 and Qwen 2.5 (Hermes `<tool_call>`).
 *
 * The models have random weights: what they say is noise, so the tests check what the server
 * guarantees — a required or named call is always made, its arguments always parse and match
 * the function's JSON schema (a grammar built from it), in 100 of 100 requests; streamed pieces
 * add up to the call; a tool result continues the conversation, also through session memory.
 */
import type { ChatTemplateFamily } from "@atlas/gguf";
import OpenAI from "openai";
import type { ChatCompletionMessageParam, ChatCompletionTool } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatCompletion, ChatCompletionChunk } from "../services/api/src/openai/responses.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const TEMPLATES: ChatTemplateFamily[] = ["chatml", "llama3.1", "qwen2.5"];

const weather: ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city, for some days",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", maxLength: 24 },
        days: { type: "integer" },
        unit: { enum: ["celsius", "fahrenheit"] },
      },
      required: ["city", "days", "unit"],
    },
  },
};
const time: ChatCompletionTool = {
  type: "function",
  function: { name: "get_time", description: "The time now", parameters: { type: "object", properties: {} } },
};

/** The arguments parse and match `get_weather`'s schema exactly. */
function expectWeatherArgs(text: string | undefined): void {
  const args = JSON.parse(text ?? "") as Record<string, unknown>;
  expect(Object.keys(args).sort()).toEqual(["city", "days", "unit"]);
  expect(typeof args.city).toBe("string");
  expect((args.city as string).length).toBeLessThanOrEqual(24);
  expect(Number.isInteger(args.days)).toBe(true);
  expect(["celsius", "fahrenheit"]).toContain(args.unit);
}

describe.each(TEMPLATES)("tools with the %s template", (template) => {
  let stack: Stack;
  let client: OpenAI;
  const ask: ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Paris for 3 days?" }];

  beforeAll(async () => {
    stack = await startStack({ services: ["persistence", "worker", "api"], chatTemplate: template, env: { ATLAS_CTX_SIZE: "2048" } });
    client = new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
  });
  afterAll(async () => stack?.close());

  it("makes the required call with arguments that match the schema, in 100 of 100 requests", async () => {
    let ok = 0;
    for (let i = 0; i < 100; i++) {
      const r = await client.chat.completions.create({
        model: MODEL,
        messages: ask,
        tools: [weather],
        tool_choice: "required",
        max_tokens: 96,
        temperature: 1,
        seed: i,
      });
      const choice = r.choices[0];
      expect(choice?.finish_reason).toBe("tool_calls");
      const call = choice?.message.tool_calls?.[0];
      expect(call?.type).toBe("function");
      expect(call?.id).toMatch(/^call_/);
      if (call?.type !== "function") continue;
      expect(call.function.name).toBe("get_weather");
      expectWeatherArgs(call.function.arguments);
      ok++;
    }
    expect(ok).toBe(100);
  }, 240_000); // 100 sequential generations; the default 30 s is a hang guard, not a speed target

  it("calls the named function among several; the answer parses with the published schema", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: ask,
      tools: [time, weather],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 96,
      temperature: 0,
    });
    expect(ChatCompletion.parse(r)).toEqual(r);
    const call = r.choices[0]?.message.tool_calls?.[0];
    expect(call?.type === "function" && call.function.name).toBe("get_weather");
    if (call?.type === "function") expectWeatherArgs(call.function.arguments);
    expect(r.usage?.completion_tokens).toBeGreaterThan(0);
  });

  it("streams tool_calls deltas that add up to the call, then finish_reason tool_calls", async () => {
    const args = {
      model: MODEL,
      messages: ask,
      tools: [weather],
      tool_choice: "required" as const,
      max_tokens: 96,
      temperature: 0,
      seed: 5,
    };
    const whole = await client.chat.completions.create(args);
    const stream = await client.chat.completions.create({ ...args, stream: true });
    let name = "";
    let id = "";
    let text = "";
    let finish: string | null = null;
    for await (const event of stream) {
      expect(ChatCompletionChunk.parse(event)).toEqual(event);
      const c = event.choices[0];
      for (const d of c?.delta.tool_calls ?? []) {
        expect(d.index).toBe(0);
        if (d.id !== undefined) {
          expect(id).toBe(""); // the id and the name come once, with the first piece
          id = d.id;
          name = d.function?.name ?? "";
        }
        text += d.function?.arguments ?? "";
      }
      finish = c?.finish_reason ?? finish;
    }
    expect(finish).toBe("tool_calls");
    expect(id).toMatch(/^call_/);
    expect(name).toBe("get_weather");
    expectWeatherArgs(text);
    const call = whole.choices[0]?.message.tool_calls?.[0];
    expect(call?.type === "function" && call.function.arguments).toBe(text);
  });

  it("may answer in text or call with tool_choice auto, and never calls with none", async () => {
    const auto = await client.chat.completions.create({ model: MODEL, messages: ask, tools: [weather], max_tokens: 24, temperature: 0 });
    const choice = auto.choices[0];
    if (choice?.finish_reason === "tool_calls") {
      const call = choice.message.tool_calls?.[0];
      if (call?.type === "function") expectWeatherArgs(call.function.arguments);
    } else expect(typeof choice?.message.content).toBe("string");
    const none = await client.chat.completions.create({
      model: MODEL,
      messages: ask,
      tools: [weather],
      tool_choice: "none",
      max_tokens: 8,
    });
    expect(none.choices[0]?.message.tool_calls).toBeUndefined();
    expect(none.choices[0]?.finish_reason).not.toBe("tool_calls");
  });

  it("continues after a tool result, and session memory keeps the call and its result", async () => {
    const session = `tools-${template}`;
    const first = await client.chat.completions.create({
      model: MODEL,
      messages: ask,
      tools: [weather],
      tool_choice: "required",
      max_tokens: 96,
      temperature: 0,
      // @ts-expect-error ATLAS's extension
      atlas: { session_id: session },
    });
    const call = first.choices[0]?.message.tool_calls?.[0];
    expect(call?.id).toBeDefined();
    // The next turn sends only the tool's result: the call it answers comes back from memory.
    const second = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "tool", tool_call_id: call?.id ?? "", content: '{"forecast": "sunny"}' }],
      tools: [weather],
      max_tokens: 8,
      temperature: 0,
      // @ts-expect-error ATLAS's extension
      atlas: { session_id: session },
    });
    expect(second.choices[0]?.finish_reason).not.toBeUndefined();
    const stored = (await fetch(`${stack.baseUrl}/v1/atlas/memory/${session}`).then((r) => r.json())) as {
      layers: { messages: Record<string, unknown>[] }[];
    };
    const messages = stored.layers.flatMap((l) => l.messages);
    expect(messages.find((m) => m.role === "assistant" && Array.isArray(m.tool_calls))?.tool_calls).toEqual([call]);
    expect(messages.find((m) => m.role === "tool")).toEqual({ role: "tool", content: '{"forecast": "sunny"}', tool_call_id: call?.id });
  });
});

describe("tools: the legacy functions API and bad requests", () => {
  let stack: Stack;
  let client: OpenAI;

  beforeAll(async () => {
    stack = await startStack({ services: ["worker", "api"], chatTemplate: "qwen2.5", env: { ATLAS_CTX_SIZE: "2048" } });
    client = new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
  });
  afterAll(async () => stack?.close());

  it("maps functions and function_call onto the same path, and a function result continues it", async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Weather in Oslo?" }],
      functions: [weather.function],
      function_call: { name: "get_weather" },
      max_tokens: 96,
      temperature: 0,
    });
    expect(ChatCompletion.parse(r)).toEqual(r);
    expect(r.choices[0]?.finish_reason).toBe("function_call");
    const fc = r.choices[0]?.message.function_call;
    expect(fc?.name).toBe("get_weather");
    expectWeatherArgs(fc?.arguments);
    const next = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: "user", content: "Weather in Oslo?" },
        { role: "assistant", content: null, function_call: fc },
        { role: "function", name: "get_weather", content: "rain" },
      ],
      functions: [weather.function],
      max_tokens: 8,
    });
    expect(next.choices[0]?.message.role).toBe("assistant");
  });

  it("refuses what cannot work with a 400 naming the parameter", async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: "user", content: "hi" }];
    const bad = async (body: Record<string, unknown>, param: string) =>
      expect(client.chat.completions.create({ model: MODEL, messages, max_tokens: 4, ...body } as never)).rejects.toMatchObject({
        status: 400,
        param,
      });
    await bad({ tool_choice: "required" }, "tool_choice");
    await bad({ tools: [weather], tool_choice: { type: "function", function: { name: "nope" } } }, "tool_choice");
    await bad({ tools: [weather], functions: [weather.function] }, "functions");
    await bad(
      {
        tools: [
          {
            type: "function",
            function: { name: "f", parameters: { type: "object", properties: { s: { type: "string", pattern: "^a" } } } },
          },
        ],
      },
      "tools[0].function.parameters",
    );
    await bad({ messages: [{ role: "tool", tool_call_id: "call_x", content: "orphan" }] }, "messages");
    await bad(
      {
        messages: [
          { role: "user", content: "hi" },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } }],
          },
          { role: "user", content: "and?" },
        ],
      },
      "messages",
    );
  });
});
