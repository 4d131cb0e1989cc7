/**
 * A property test over real HTTP (kept-alive connections): at least 10,000 generated and
 * mutated requests across the endpoints — chat and legacy completions (streamed or not),
 * session memory import, append, read, list and delete — with valid bodies, bodies one mutation
 * away from valid, arbitrary JSON, broken JSON bytes and wrong content types.
 *
 * What must hold for every one: no 5xx, no crash, no hang; every error is exactly OpenAI's
 * shape `{"error": {"message", "type", "param", "code"}}`; every response carries
 * `x-request-id`; every stream ends, and an error inside it is the same shape.
 */
import { Agent, request as httpRequest } from "node:http";
import * as fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const BATCH = 8;
const RUNS = 1280; // × BATCH = 10,240 requests
let stack: Stack;
let agent: Agent;
let sent = 0;
let generated = 0;

beforeAll(async () => {
  stack = await startStack({ services: ["persistence", "worker", "api"], env: { ATLAS_CTX_SIZE: "512", ATLAS_SLOTS: "4" } });
  agent = new Agent({ keepAlive: true, maxSockets: BATCH });
  await waitFor(async () => ((await (await fetch(`${stack.baseUrl}/v1/models`)).json()) as { data: unknown[] }).data.length === 1);
}, 60_000);
afterAll(async () => {
  agent?.destroy();
  await stack?.close();
});

/** One request as the fuzzer makes it. */
interface Req {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  contentType?: string;
  body?: string;
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function send(r: Req): Promise<Res> {
  const url = new URL(stack.baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: r.path,
        method: r.method,
        agent,
        headers: r.body === undefined ? {} : { "content-type": r.contentType ?? "application/json" },
        timeout: 60_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`No answer in 60 s to ${r.method} ${r.path}`)));
    req.on("error", reject);
    req.end(r.body);
  });
}

// ---- Arbitraries -------------------------------------------------------------------------

const weirdNumber = fc.constantFrom(-1, 0, 1, 2, 3, 1.5, -0.5, 1e308, -1e308, 2 ** 53, 4096, 100_000);
const weird = fc.oneof(
  weirdNumber,
  fc.constantFrom("", " ", "\u0000", "\ud800", "é", "🙂", "x".repeat(3000), null, true, false, [], {}),
  fc.jsonValue({ maxDepth: 2 }),
);
const text = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom("", "\ud83d", "<|im_end|>", "</s>", "\n\n\n", '{"a":') },
);
const sessionId = fc.oneof(
  { weight: 5, arbitrary: fc.stringMatching(/^[A-Za-z0-9._:-]{1,16}$/) },
  { weight: 1, arbitrary: fc.string({ maxLength: 140 }) },
);
/** A value that is usually valid for its field, sometimes anything. */
const maybe = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 30, arbitrary: valid }, { weight: 1, arbitrary: weird });

const content = fc.oneof(
  { weight: 6, arbitrary: text },
  { weight: 1, arbitrary: fc.array(fc.record({ type: fc.constantFrom("text", "image_url"), text }), { maxLength: 3 }) },
);
const message = fc.record(
  {
    role: maybe(fc.constantFrom("system", "developer", "user", "assistant", "tool")),
    content: maybe(content),
    name: fc.string({ maxLength: 8 }),
  },
  { requiredKeys: ["role", "content"] },
);
const atlas = fc.record(
  {
    session_id: maybe(sessionId),
    memory_layers: maybe(fc.integer({ min: 1, max: 10 })),
    cache_strategy: maybe(fc.constantFrom("lru", "lfu", "adaptive")),
    batch_size: maybe(fc.integer({ min: 1, max: 4 })),
  },
  { requiredKeys: [] },
);
const common = {
  model: fc.oneof(
    { weight: 20, arbitrary: fc.constant(MODEL) },
    { weight: 1, arbitrary: fc.constantFrom("gpt-4o", "") },
    { weight: 1, arbitrary: weird },
  ),
  max_tokens: fc.oneof(
    { weight: 20, arbitrary: fc.integer({ min: 1, max: 24 }) },
    { weight: 2, arbitrary: fc.integer({ min: -2, max: 600 }) },
    { weight: 1, arbitrary: weird },
  ),
  temperature: maybe(fc.double({ min: 0, max: 2, noNaN: true })),
  top_p: maybe(fc.double({ min: 0, max: 1, noNaN: true })),
  n: maybe(fc.integer({ min: 1, max: 3 })),
  stream: maybe(fc.boolean()),
  stream_options: maybe(fc.record({ include_usage: fc.boolean() })),
  stop: maybe(fc.oneof(fc.string({ minLength: 1, maxLength: 6 }), fc.array(fc.string({ minLength: 1, maxLength: 6 }), { maxLength: 4 }))),
  seed: maybe(fc.integer()),
  presence_penalty: maybe(fc.double({ min: -2, max: 2, noNaN: true })),
  frequency_penalty: maybe(fc.double({ min: -2, max: 2, noNaN: true })),
  user: maybe(fc.string({ maxLength: 10 })),
  atlas: maybe(atlas),
};
const chatBody = fc.record(
  {
    ...common,
    messages: maybe(fc.array(message, { maxLength: 5 })),
    max_completion_tokens: maybe(fc.integer({ min: 1, max: 30 })),
    response_format: maybe(fc.constantFrom({ type: "text" }, { type: "json_object" }, { type: "xml" })),
  },
  { requiredKeys: ["model", "messages"] },
);
const completionBody = fc.record(
  {
    ...common,
    prompt: maybe(fc.oneof(text, fc.array(text, { maxLength: 4 }))),
    echo: maybe(fc.boolean()),
    best_of: maybe(fc.integer({ min: 1, max: 3 })),
  },
  { requiredKeys: ["model", "prompt"] },
);
const layer = fc.record(
  {
    id: maybe(fc.stringMatching(/^[A-Za-z0-9._:-]{1,12}$/)),
    messages: maybe(
      fc.array(fc.record({ role: maybe(fc.constantFrom("user", "assistant", "system")), content: maybe(text) }), { maxLength: 3 }),
    ),
    usage: maybe(fc.record({ prompt_tokens: fc.nat(), completion_tokens: fc.nat(), total_tokens: fc.nat() })),
    created_at: maybe(fc.constantFrom("2026-01-01T00:00:00Z", "yesterday")),
  },
  { requiredKeys: ["messages"] },
);
const documentBody = fc.record(
  {
    version: maybe(fc.constant(1)),
    layers: maybe(fc.array(layer, { maxLength: 3 })),
    metadata: maybe(fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 })),
    model: maybe(fc.constantFrom(MODEL, null)),
    tenant: maybe(fc.constantFrom("default", "other")),
  },
  { requiredKeys: ["version"] },
);

/** A key that is not an argument, one ATLAS refuses as not supported yet, or one whose odd values it must refuse. */
const strayKey = fc.constantFrom(
  "unknown_argument",
  "tools",
  "tool_choice",
  "logit_bias",
  "suffix",
  "functions",
  "top_logprobs",
  "audio",
  "__proto__",
  "",
);

/** One step away from a valid body: a key dropped, a value replaced, a key added. */
function mutate(body: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 4, arbitrary: body },
    {
      weight: 1,
      arbitrary: fc.tuple(body, strayKey, weird).map(([b, k, v]) => {
        const copy: Record<string, unknown> = { ...b };
        Object.defineProperty(copy, k, { value: v, enumerable: true, writable: true, configurable: true });
        return copy;
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(body, fc.nat(), weird).map(([b, i, v]) => {
        const keys = Object.keys(b);
        const k = keys[i % Math.max(1, keys.length)];
        const copy: Record<string, unknown> = { ...b };
        if (k !== undefined) copy[k] = v;
        return copy;
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(body, fc.nat()).map(([b, i]) => {
        const keys = Object.keys(b);
        const copy: Record<string, unknown> = { ...b };
        delete copy[keys[i % Math.max(1, keys.length)] ?? ""];
        return copy;
      }),
    },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  );
}

/** JSON text, sometimes with its bytes broken (cut, a character changed, garbage added). */
function serialize(value: fc.Arbitrary<unknown>): fc.Arbitrary<{ body: string; contentType?: string }> {
  return fc.oneof(
    { weight: 8, arbitrary: value.map((v) => ({ body: JSON.stringify(v) ?? "null" })) },
    {
      weight: 1,
      arbitrary: fc.tuple(value, fc.nat(), fc.string({ maxLength: 3 })).map(([v, i, junk]) => {
        const s = JSON.stringify(v) ?? "null";
        const at = i % (s.length + 1);
        return { body: s.slice(0, at) + junk + s.slice(at + 1) };
      }),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(value, fc.constantFrom("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin1", ""))
        .map(([v, contentType]) => ({ body: JSON.stringify(v) ?? "null", contentType })),
    },
  );
}

const sessionPath = fc.oneof(
  { weight: 5, arbitrary: sessionId.map((s) => encodeURIComponent(s)) },
  { weight: 1, arbitrary: fc.constantFrom("%00", "..%2F..", "a%2Fb", "%ZZ", "x".repeat(300)) },
);

const request: fc.Arbitrary<Req> = fc.oneof(
  { weight: 5, arbitrary: serialize(mutate(chatBody)).map((b) => ({ method: "POST" as const, path: "/v1/chat/completions", ...b })) },
  { weight: 3, arbitrary: serialize(mutate(completionBody)).map((b) => ({ method: "POST" as const, path: "/v1/completions", ...b })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(sessionPath, serialize(mutate(documentBody)))
      .map(([s, b]) => ({ method: "PUT" as const, path: `/v1/atlas/memory/${s}`, ...b })),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(sessionPath, serialize(mutate(layer)))
      .map(([s, b]) => ({ method: "POST" as const, path: `/v1/atlas/memory/${s}/layers`, ...b })),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom("GET", "DELETE") as fc.Arbitrary<"GET" | "DELETE">, sessionPath)
      .map(([method, s]) => ({ method, path: `/v1/atlas/memory/${s}` })),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.oneof(fc.integer({ min: -5, max: 200 }).map(String), fc.string({ maxLength: 5 })), sessionPath)
      .map(([limit, after]) => ({ method: "GET" as const, path: `/v1/atlas/memory?limit=${encodeURIComponent(limit)}&after=${after}` })),
  },
);

// ---- Checks ------------------------------------------------------------------------------

const ERROR_TYPES = new Set([
  "invalid_request_error",
  "authentication_error",
  "permission_error",
  "not_found_error",
  "rate_limit_error",
  "server_error",
]);

function checkError(value: unknown, where: string): void {
  const body = value as { error?: Record<string, unknown> };
  expect(Object.keys(body ?? {}), where).toEqual(["error"]);
  const e = body.error ?? {};
  expect(Object.keys(e).sort(), where).toEqual(["code", "message", "param", "type"]);
  expect(typeof e.message === "string" && e.message.length > 0, where).toBe(true);
  expect(ERROR_TYPES.has(String(e.type)), where).toBe(true);
  expect(e.param === null || typeof e.param === "string", where).toBe(true);
  expect(e.code === null || typeof e.code === "string", where).toBe(true);
  expect(String(e.message), where).not.toMatch(/\n\s+at |node_modules|\.ts:\d+/);
}

function check(r: Req, res: Res): void {
  const where = `${r.method} ${r.path} ${r.body?.slice(0, 300) ?? ""} -> ${res.status} ${res.text.slice(0, 300)}`;
  expect(res.status, where).toBeLessThan(500);
  expect(res.headers["x-request-id"], where).toBeDefined();
  const type = String(res.headers["content-type"] ?? "");
  if (type.startsWith("text/event-stream")) {
    generated += 1;
    const data = res.text
      .split("\n")
      .filter((l) => l.startsWith("data: "))
      .map((l) => l.slice(6));
    expect(data.length, where).toBeGreaterThan(0);
    const last = data.at(-1) ?? "";
    if (last !== "[DONE]") checkError(JSON.parse(last), where);
    for (const d of data.slice(0, -1)) expect(() => JSON.parse(d), where).not.toThrow();
    return;
  }
  const json = JSON.parse(res.text) as unknown;
  if (res.status >= 400) checkError(json, where);
  else if (r.path.startsWith("/v1/chat") || r.path.startsWith("/v1/completions")) generated += 1;
}

describe("fuzzing the HTTP surface", () => {
  it(`answers ${RUNS * BATCH} generated and mutated requests without a 5xx, each error in OpenAI's shape`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        const answers = await Promise.all(batch.map((r) => send(r)));
        sent += batch.length;
        for (const [i, r] of batch.entries()) check(r, answers[i] as Res);
      }),
      { numRuns: RUNS, seed: Number(process.env.FUZZ_SEED ?? 20261126), endOnFailure: true },
    );
    expect(sent).toBeGreaterThanOrEqual(10_000);
    expect(generated).toBeGreaterThan(200); // the valid ones really ran on the model
    // Still alive and well.
    const health = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "still there?" }], max_tokens: 2 }),
    });
    expect(health.status).toBe(200);
    expect(stack.nats.violations()).toEqual([]);
  }, 600_000);
});
