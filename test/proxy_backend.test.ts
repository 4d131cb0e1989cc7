/**
 * The proxy backend (`ATLAS_WORKER_BACKEND=openai`, services/inference-worker/src/proxy_*.ts)
 * against a real upstream: a second ATLAS stack (its own nats-server, scheduler, llama.cpp
 * worker on the generated model, api) serves as the OpenAI-compatible server, and the first
 * stack's only workers are two proxies pointed at the upstream's api. Nothing is faked: the
 * proxies speak HTTP + SSE to the upstream through the `openai` client, and the first stack's
 * scheduler leases their slots like any worker's.
 */
import { Health, SchedulerState, StatsResponse } from "@atlas/contracts";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let upstream: Stack;
let front: Stack;
let upstreamPort = 0;

const client = (stack: Stack) => new OpenAI({ baseURL: `${stack.baseUrl}/v1`, apiKey: "unused", maxRetries: 0 });

function busOf(stack: Stack) {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("the api is not running");
  return bus;
}

const frontPool = () => busOf(front).call(SchedulerState, {}, { timeoutMs: 2000 });
const proxyHealth = (id: string) =>
  busOf(front).call(Health, {}, { params: { service: "inference-worker", instance: id }, timeoutMs: 2000 });

/** The upstream worker's `worker.generate` endpoint counters (NATS micro stats). */
async function upstreamGenerateStats() {
  const msg = await busOf(upstream).nc.request("$SRV.STATS.inference-worker.worker-1", undefined, { timeout: 2000 });
  const direct = StatsResponse.parse(msg.json()).endpoints.filter((e) => e.name === "worker.generate");
  return {
    requests: direct.reduce((s, e) => s + e.num_requests, 0),
    errors: direct.reduce((s, e) => s + e.num_errors, 0),
    lastError: direct.map((e) => e.last_error).join(" "),
  };
}

beforeAll(async () => {
  upstream = await startStack({ services: ["scheduler", "worker", "api"], env: { ATLAS_SLOTS: "2", ATLAS_CTX_SIZE: "16384" } });
  upstreamPort = Number(new URL(upstream.baseUrl).port);
  // The upstream's api knows its model (and its pool) before a proxy asks.
  await waitFor(async () => (await client(upstream).models.list()).data.some((m) => m.id === MODEL), { what: "the upstream's model" });
  front = await startStack({ services: ["persistence", "scheduler", "api"] });
  const upstreamEnv = { ATLAS_WORKER_BACKEND: "openai", ATLAS_UPSTREAM_URL: `${upstream.baseUrl}/v1` };
  // worker-1 discovers the upstream's slots; worker-2 is given its share.
  await front.start("worker", upstreamEnv);
  await front.start("worker", { ...upstreamEnv, ATLAS_UPSTREAM_SLOTS: "1" });
  await waitFor(async () => (await frontPool()).workers.filter((w) => w.alive).length === 2, { what: "both proxies in the pool" });
  await waitFor(async () => (await client(front).models.list()).data.some((m) => m.id === MODEL), { what: "the model at the front" });
}, 120_000);
afterAll(async () => {
  await front?.close();
  await upstream?.close();
});

describe("a worker that fronts an OpenAI-compatible server", () => {
  it("registers the upstream's parallel slots with the scheduler, discovered or configured, and reports the upstream in its health", async () => {
    const pool = await frontPool();
    const slots = Object.fromEntries(pool.workers.map((w) => [w.worker_id, w.slots.length]));
    expect(slots).toEqual({ "worker-1": 2, "worker-2": 1 });
    const h1 = await proxyHealth("worker-1");
    expect(h1.state).toBe("ok");
    expect(h1.checks.upstream?.ok).toBe(true);
    expect(h1.details?.backend).toMatchObject({
      type: "openai",
      upstream: {
        url: `${upstream.baseUrl}/v1`,
        reachable: true,
        kind: "atlas",
        model: MODEL,
        slots: 2,
        slots_from: "atlas-status",
        ctx_size: 16384,
      },
    });
    expect((await proxyHealth("worker-2")).details?.backend).toMatchObject({ upstream: { slots: 1, slots_from: "ATLAS_UPSTREAM_SLOTS" } });
  });

  it("answers a chat with the upstream's own greedy answer, under a fenced lease of the front's scheduler", async () => {
    const body = { model: MODEL, messages: [{ role: "user" as const, content: "Tell me about the sea." }], max_tokens: 24, temperature: 0 };
    const direct = await client(upstream).chat.completions.create(body);
    const res = await fetch(`${front.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...body, atlas: {} }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-atlas-degraded")).toBeNull();
    const via = (await res.json()) as OpenAI.ChatCompletion & {
      atlas: { workers: string[]; slots: { worker: string; fencing_token: number | null }[] };
    };
    expect(direct.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(via.choices[0]?.message.content).toBe(direct.choices[0]?.message.content);
    expect(via.choices[0]?.finish_reason).toBe(direct.choices[0]?.finish_reason);
    expect(via.usage?.prompt_tokens).toBe(direct.usage?.prompt_tokens);
    expect(via.usage?.completion_tokens).toBe(direct.usage?.completion_tokens);
    expect(via.atlas.slots[0]?.fencing_token).toBeGreaterThan(0);
    expect(["worker-1", "worker-2"]).toContain(via.atlas.slots[0]?.worker);
  });

  it("streams the upstream's answer chunk by chunk, as OpenAI streams", async () => {
    const body = { model: MODEL, messages: [{ role: "user" as const, content: "Count to ten." }], max_tokens: 40, temperature: 0 };
    const direct = await client(upstream).chat.completions.create(body);
    const stream = await client(front).chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const pieces: string[] = [];
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (c?.delta.content) pieces.push(c.delta.content);
      if (c?.finish_reason) finish = c.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.join("")).toBe(direct.choices[0]?.message.content);
    expect(finish).toBe(direct.choices[0]?.finish_reason);
    expect(usage?.completion_tokens).toBe(direct.usage?.completion_tokens);
  });

  it("passes log-probabilities and tool calls through, as the upstream computes them", async () => {
    const lp = {
      model: MODEL,
      messages: [{ role: "user" as const, content: "Hi" }],
      max_tokens: 6,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    };
    const [direct, via] = await Promise.all([client(upstream).chat.completions.create(lp), client(front).chat.completions.create(lp)]);
    const entries = (r: OpenAI.ChatCompletion) => r.choices[0]?.logprobs?.content ?? [];
    expect(entries(direct).length).toBeGreaterThan(0);
    // The same tokens and alternatives; the values to float noise (the upstream's two slots may
    // evaluate the prompt in different batches, one of them reusing a cached prefix).
    expect(entries(via).map((e) => [e.token, e.top_logprobs.map((t) => t.token)])).toEqual(
      entries(direct).map((e) => [e.token, e.top_logprobs.map((t) => t.token)]),
    );
    for (const [i, e] of entries(via).entries()) expect(e.logprob).toBeCloseTo(entries(direct)[i]?.logprob ?? Number.NaN, 3);

    const tools = {
      model: MODEL,
      messages: [{ role: "user" as const, content: "Weather in Oslo?" }],
      max_tokens: 64,
      temperature: 0,
      tools: [
        {
          type: "function" as const,
          function: {
            name: "get_weather",
            parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 } }, required: ["city"] },
          },
        },
      ],
      tool_choice: { type: "function" as const, function: { name: "get_weather" } },
    };
    const [d, v] = await Promise.all([client(upstream).chat.completions.create(tools), client(front).chat.completions.create(tools)]);
    const call = (r: OpenAI.ChatCompletion) => r.choices[0]?.message.tool_calls?.map((c) => (c.type === "function" ? c.function : null));
    expect(d.choices[0]?.finish_reason).toBe("tool_calls");
    expect(v.choices[0]?.finish_reason).toBe("tool_calls");
    expect(call(v)).toEqual(call(d));
  });

  it("aborts the upstream's generation when the client goes away mid-stream, and the leases on both sides end", async () => {
    const before = await upstreamGenerateStats();
    const ac = new AbortController();
    // 16,000 tokens past end-of-sequence: seconds of upstream work if nothing stopped it.
    const res = await fetch(`${front.baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "Once", max_tokens: 16_000, ignore_eos: true, stream: true }),
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    const reader = res.body?.getReader();
    const first = await reader?.read();
    expect(new TextDecoder().decode(first?.value)).toContain("data:");
    // Mid-stream: a proxy slot is leased at the front and busy, and the upstream works on it.
    const leased = (await frontPool()).workers.flatMap((w) => w.slots.filter((s) => s.lease_id !== null).map(() => w.worker_id));
    expect(leased.length).toBeGreaterThan(0);
    const busy = await Promise.all(
      ["worker-1", "worker-2"].map(async (id) =>
        (((await proxyHealth(id)).details?.slot_states ?? []) as { busy: boolean }[]).some((s) => s.busy),
      ),
    );
    expect(busy).toContain(true);
    ac.abort();

    // The upstream worker's generation ended cancelled, not finished.
    await expect.poll(async () => (await upstreamGenerateStats()).errors, { timeout: 10_000 }).toBe(before.errors + 1);
    expect((await upstreamGenerateStats()).lastError).toMatch(/cancel|went away/i);
    // Both schedulers end their leases (the front's credits go back after a second idle).
    await expect.poll(async () => (await frontPool()).leases, { timeout: 10_000 }).toBe(0);
    const upstreamPool = () => busOf(upstream).call(SchedulerState, {}, { timeoutMs: 2000 });
    await expect.poll(async () => (await upstreamPool()).leases, { timeout: 10_000 }).toBe(0);
  });

  it("brings a session's turns back to the same proxy worker and slot (affinity is the front scheduler's)", async () => {
    const session = `proxy-affinity-${crypto.randomUUID().slice(0, 8)}`;
    type Reply = {
      choices: { message: { content: string } }[];
      usage: { prompt_tokens: number; completion_tokens: number };
      atlas: { slots: { worker: string; slot: number }[] };
    };
    const chat = async (content: string, atlas: Record<string, unknown>) => {
      const res = await fetch(`${front.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content }], max_tokens: 8, temperature: 0, atlas }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as Reply;
    };
    const a = await chat("Remember the word: lighthouse.", { session_id: session });
    const home = a.atlas.slots[0];
    expect(home).toBeDefined();
    // Other conversations in between take the other slots.
    await Promise.all([chat("Hello", { session_id: `${session}-x` }), chat("Hi", { session_id: `${session}-y` })]);
    // The front's pool keeps the session on its slot, with the tokens the proxy reported for it
    // (the upstream's usage of turn 1): what the scheduler's affinity goes by.
    const holder = async () =>
      (await frontPool()).workers.flatMap((w) =>
        w.slots.filter((s) => s.session?.endsWith(`/${session}`)).map((s) => ({ worker: w.worker_id, slot: s.slot, tokens: s.tokens })),
      );
    await expect
      .poll(holder, { timeout: 5000 })
      .toEqual([{ worker: home?.worker, slot: home?.slot, tokens: a.usage.prompt_tokens + a.usage.completion_tokens }]);
    const b = await chat("What was the word?", { session_id: session });
    expect(b.atlas.slots[0]).toMatchObject({ worker: home?.worker, slot: home?.slot });
  });

  it("goes down with its upstream (health, pool, requests) and comes back when it answers again", async () => {
    await upstream.stop("api");
    await expect.poll(async () => (await proxyHealth("worker-1")).state, { timeout: 10_000 }).toBe("down");
    const down = await proxyHealth("worker-1");
    expect(down.checks.upstream).toMatchObject({ ok: false });
    expect(down.details?.backend).toMatchObject({ upstream: { reachable: false } });
    // No heartbeats: the front's scheduler declares both proxies dead, and the front is not ready.
    await expect.poll(async () => (await frontPool()).workers.filter((w) => w.alive).length, { timeout: 10_000 }).toBe(0);
    expect((await fetch(`${front.baseUrl}/ready`)).status).toBe(503);
    const refused = await fetch(`${front.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 4 }),
    });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("no_workers");

    await upstream.start("api", { PORT: String(upstreamPort) });
    await expect.poll(async () => (await proxyHealth("worker-1")).state, { timeout: 15_000 }).toBe("ok");
    await expect.poll(async () => (await frontPool()).workers.filter((w) => w.alive).length, { timeout: 10_000 }).toBe(2);
    const again = await client(front).chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
    expect(again.choices[0]?.finish_reason).toMatch(/stop|length/);
  }, 60_000);
});
