/**
 * The proxy backend's translation (proxy_map.ts) on OpenAI's documented chunk shapes: what is
 * sent upstream per kind of upstream, how chunks become `GenerateChunk`s and an end, and how
 * upstream errors become bus errors. The HTTP side runs against a real upstream in
 * test/proxy_backend.test.ts.
 */
import { BusError } from "@atlas/bus";
import { GenerateRequest } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { StreamMapper, upstreamCall, upstreamError, upstreamFault } from "./proxy_map.ts";

const sampling = { temperature: 0, top_p: 1, presence_penalty: 0, frequency_penalty: 0, stop: [], max_tokens: 8 };
const chatRequest = (extra: Record<string, unknown> = {}) =>
  GenerateRequest.parse({ request_id: "r-1", model: "m", messages: [{ role: "user", content: "Hi" }], sampling, ...extra });

const chunk = (delta: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  id: "c",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta, finish_reason: null, ...extra }],
});

describe("upstreamCall", () => {
  it("sends OpenAI's fields, with usage in the stream, and llama-server's slot only to llama-server", () => {
    const a = upstreamCall(chatRequest(), "up-model", "atlas", 1);
    expect(a).toEqual({
      endpoint: "chat",
      body: {
        model: "up-model",
        stream: true,
        stream_options: { include_usage: true },
        temperature: 0,
        top_p: 1,
        presence_penalty: 0,
        frequency_penalty: 0,
        max_tokens: 8,
        messages: [{ role: "user", content: "Hi" }],
      },
    });
    expect(upstreamCall(chatRequest(), "up-model", "llama-server", 1).body).toMatchObject({ id_slot: 1, cache_prompt: true });
  });

  it("maps logprobs, tools and tool calls in the history to OpenAI's shapes", () => {
    const req = chatRequest({
      messages: [
        { role: "user", content: "Weather?" },
        { role: "assistant", content: "", tool_calls: [{ id: "call_1", type: "function", function: { name: "get", arguments: "{}" } }] },
        { role: "tool", content: "sunny", tool_call_id: "call_1" },
      ],
      logprobs: 2,
      tools: [{ name: "get", parameters: { type: "object" } }],
      tool_choice: { name: "get" },
    });
    const { body } = upstreamCall(req, "m", "openai", 0);
    expect(body).toMatchObject({
      logprobs: true,
      top_logprobs: 2,
      tools: [{ type: "function", function: { name: "get", parameters: { type: "object" } } }],
      tool_choice: { type: "function", function: { name: "get" } },
    });
    expect((body.messages as unknown[])[1]).toEqual({
      role: "assistant",
      content: null,
      tool_calls: [{ id: "call_1", type: "function", function: { name: "get", arguments: "{}" } }],
    });
    expect((body.messages as unknown[])[2]).toEqual({ role: "tool", content: "sunny", tool_call_id: "call_1" });
  });

  it("sends a raw prompt as a completion, and refuses what the upstream cannot do", () => {
    const prompt = GenerateRequest.parse({ request_id: "r", model: "m", prompt: "Once", sampling, logprobs: 3 });
    expect(upstreamCall(prompt, "m", "atlas", 0)).toMatchObject({ endpoint: "completion", body: { prompt: "Once", logprobs: 3 } });
    const eos = chatRequest({ sampling: { ...sampling, ignore_eos: true } });
    expect(upstreamCall(eos, "m", "atlas", 0).body).toMatchObject({ ignore_eos: true });
    expect(() => upstreamCall(eos, "m", "openai", 0)).toThrow(expect.objectContaining({ code: "bad_request", param: "ignore_eos" }));
    const json = GenerateRequest.parse({ request_id: "r", model: "m", prompt: "x", sampling, response_format: { type: "json_object" } });
    expect(() => upstreamCall(json, "m", "atlas", 0)).toThrow(expect.objectContaining({ code: "bad_request", param: "response_format" }));
  });
});

describe("StreamMapper", () => {
  it("turns content deltas into chunks and the last chunks into the end, usage included", () => {
    const m = new StreamMapper("chat", false);
    expect(m.push(chunk({ role: "assistant", content: "" }))).toBeUndefined();
    expect(m.push(chunk({ content: "Hel" }))).toEqual({ text: "Hel", tokens: 1 });
    expect(m.push(chunk({ content: "lo" }))).toEqual({ text: "lo", tokens: 1 });
    expect(m.push(chunk({}, { finish_reason: "length" }))).toBeUndefined();
    m.push({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 4 } } });
    expect(m.end()).toEqual({ finish_reason: "length", usage: { prompt_tokens: 9, completion_tokens: 2, cached_tokens: 4 } });
  });

  it("assembles streamed tool calls, and passes their pieces on", () => {
    const m = new StreamMapper("chat", false);
    const first = m.push(
      chunk({ tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "get", arguments: '{"ci' } }] }),
    );
    expect(first).toEqual({ text: "", tokens: 1, tool_calls: [{ index: 0, id: "call_a", name: "get", arguments: '{"ci' }] });
    m.push(chunk({ tool_calls: [{ index: 0, function: { arguments: 'ty":"Oslo"}' } }] }));
    m.push(chunk({}, { finish_reason: "tool_calls" }));
    expect(m.end()).toMatchObject({
      finish_reason: "tool_calls",
      tool_calls: [{ id: "call_a", type: "function", function: { name: "get", arguments: '{"city":"Oslo"}' } }],
    });
  });

  it("maps chat and legacy completion log-probabilities, bytes included", () => {
    const chat = new StreamMapper("chat", true);
    const lp = { token: "é", logprob: -0.5, bytes: null, top_logprobs: [{ token: "é", logprob: -0.5, bytes: [195, 169] }] };
    expect(chat.push(chunk({ content: "é" }, { logprobs: { content: [lp] } }))).toEqual({
      text: "é",
      tokens: 1,
      logprobs: [{ token: "é", bytes: [195, 169], logprob: -0.5, top: [{ token: "é", bytes: [195, 169], logprob: -0.5 }] }],
    });
    const completion = new StreamMapper("completion", true);
    const out = completion.push({
      choices: [
        {
          index: 0,
          text: " a",
          finish_reason: null,
          logprobs: { tokens: [" a"], token_logprobs: [-1], top_logprobs: [{ " b": -2, " a": -1 }] },
        },
      ],
    });
    expect(out?.logprobs?.[0]?.top.map((t) => t.token)).toEqual([" a", " b"]);
  });

  it("refuses text without the log-probabilities asked for, a stream cut short, and a chunk of another shape", () => {
    expect(() => new StreamMapper("chat", true).push(chunk({ content: "x" }))).toThrow(expect.objectContaining({ param: "logprobs" }));
    const cut = new StreamMapper("chat", false);
    cut.push(chunk({ content: "x" }));
    expect(() => cut.end()).toThrow(expect.objectContaining({ code: "unavailable" }));
    expect(() => new StreamMapper("chat", false).push({ choices: "nope" })).toThrow(expect.objectContaining({ code: "bad_reply" }));
  });
});

describe("upstreamError", () => {
  it("keeps the client's errors the client's, and makes the upstream's trouble retryable", () => {
    const bad = upstreamError({
      status: 400,
      error: { message: "too long", type: "invalid_request_error", param: "messages" },
      message: "400",
    });
    expect(bad).toBeInstanceOf(BusError);
    expect(bad).toMatchObject({ code: "bad_request", param: "messages", retryable: false });
    expect(upstreamError({ status: 429, error: undefined, message: "slow down", retryAfterS: 3 })).toMatchObject({
      code: "overloaded",
      retryable: true,
      retryAfterS: 3,
    });
    expect(upstreamError({ status: undefined, error: undefined, message: "ECONNREFUSED", connection: "failed" })).toMatchObject({
      code: "unavailable",
      retryable: true,
    });
    // An error event inside the stream carries no status: its OpenAI type says what it is.
    expect(upstreamError({ status: undefined, error: { message: "bad", type: "invalid_request_error" }, message: "" })).toMatchObject({
      code: "bad_request",
    });
  });

  it("makes a 404 or a refused key the proxy's fault, not the client's: unavailable, naming the upstream's problem", () => {
    const missing = { status: 404, error: { message: "model 'big' not found", type: "not_found_error" }, message: "404" };
    const e404 = upstreamError(missing);
    expect(e404).toMatchObject({ code: "unavailable", retryable: true, param: null });
    expect(e404.message).toMatch(/404.*ATLAS_UPSTREAM_URL or ATLAS_UPSTREAM_MODEL.*model 'big' not found/);
    for (const status of [401, 403]) {
      const refused = upstreamError({ status, error: undefined, message: "no key" });
      expect(refused).toMatchObject({ code: "unavailable", retryable: true });
      expect(refused.message).toMatch(new RegExp(`${status}.*ATLAS_UPSTREAM_API_KEY.*no key`));
    }
    // The same for an error event inside the stream, by its type; these also take the worker down.
    const event = { status: undefined, error: { message: "no such model", type: "not_found_error" }, message: "" };
    expect(upstreamError(event)).toMatchObject({ code: "unavailable" });
    for (const f of [missing, event, { status: 401, error: undefined, message: "" }, { status: 403, error: undefined, message: "" }]) {
      expect(upstreamFault(f)).toBe(true);
    }
    for (const status of [400, 429, 500, 503]) expect(upstreamFault({ status, error: undefined, message: "" })).toBe(false);
    expect(upstreamFault({ status: undefined, error: undefined, message: "", connection: "failed" })).toBe(false);
  });
});
