/**
 * Several models in one cluster, end to end: a real nats-server, the scheduler, persistence,
 * metrics, the api, and two workers on two different generated models, the tiny ChatML one as
 * "alpha" and the tiny Qwen 2.5 one as "beta", one worker each (`ATLAS_MODEL_ALIASES`:
 * `gpt-4o=alpha,other=beta`). `/v1/models` lists both with their context length, and the
 * aliases; every request lands on a worker of the model it names (an alias on its model's); a
 * session used with both models stays with each model's own worker; the metrics' `model` label
 * takes the served model ids only; an unknown model is a 404; a model whose only worker stopped
 * is a 503 with `Retry-After` while the other still answers, and a model of `ATLAS_MODELS` no
 * worker serves yet is a 503 too.
 */
import type { RunningService } from "@atlas/service";
import OpenAI from "openai";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, testModel } from "./helpers/stack.ts";

let stack: Stack;
let client: OpenAI;
/** The first api (a test starts a second one, which `stack.baseUrl` then points at). */
let baseUrl: string;
let alphaPath: string;
let betaPath: string;
/** The one worker of "beta" (worker-2); "alpha"'s is worker-1. */
let beta: RunningService;

beforeAll(async () => {
  stack = await startStack({
    services: ["metrics", "persistence", "scheduler", "api"],
    env: { ATLAS_MODEL_ALIASES: "gpt-4o=alpha,other=beta", ATLAS_METRICS_INTERVAL: "200" },
  });
  baseUrl = stack.baseUrl;
  client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30_000 });
  alphaPath = await testModel();
  betaPath = await testModel({ chatTemplate: "qwen2.5" });
  await stack.start("worker", { ATLAS_MODEL: alphaPath, ATLAS_MODEL_ID: "alpha" });
  beta = await stack.start("worker", { ATLAS_MODEL: betaPath, ATLAS_MODEL_ID: "beta" });
}, 120_000);
afterAll(async () => stack?.close());

interface Answer {
  status: number;
  retryAfter: string | null;
  body: {
    model?: string;
    atlas?: { workers: string[]; session_id?: string };
    error?: { code: string; param: string | null; message: string; type: string };
  };
}

/** A chat request carrying `atlas` (so the answer names the workers), through `url` (default: the first api). */
async function chat(model: string, atlas: Record<string, unknown> = {}, url = baseUrl): Promise<Answer> {
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "Say hello." }], max_tokens: 4, atlas }),
  });
  return { status: r.status, retryAfter: r.headers.get("retry-after"), body: (await r.json()) as Answer["body"] };
}

describe("GET /v1/models", () => {
  it("lists both models with owner and context length, then the aliases with the model they stand for", async () => {
    await expect
      .poll(async () => (await client.models.list()).data.map((m) => m.id), { timeout: 20_000 })
      .toEqual(["alpha", "beta", "gpt-4o", "other"]);
    const data = (await client.models.list()).data as unknown as Record<string, unknown>[];
    const ctx = stack.config.ATLAS_CTX_SIZE;
    expect(data[0]).toEqual({
      id: "alpha",
      object: "model",
      created: expect.any(Number),
      owned_by: "atlas",
      context_length: ctx,
      root: "alpha",
    });
    expect(data[1]).toMatchObject({ id: "beta", object: "model", owned_by: "atlas", context_length: ctx, root: "beta" });
    expect(data[2]).toMatchObject({ id: "gpt-4o", root: "alpha", context_length: ctx, created: data[0]?.created });
    expect(data[3]).toMatchObject({ id: "other", root: "beta" });
  });

  it("retrieves a model or an alias by id, and answers an unknown one with OpenAI's 404", async () => {
    await expect(client.models.retrieve("beta")).resolves.toMatchObject({
      id: "beta",
      root: "beta",
      context_length: stack.config.ATLAS_CTX_SIZE,
    });
    await expect(client.models.retrieve("other")).resolves.toMatchObject({ id: "other", object: "model", root: "beta" });
    const missing = await fetch(`${baseUrl}/v1/models/nope`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as Answer["body"]).error).toMatchObject({ code: "model_not_found", type: "not_found_error" });
  });
});

describe("routing by model", () => {
  it("sends each model's requests to its own worker, and an alias's to its model's", async () => {
    for (const [model, id, worker] of [
      ["alpha", "alpha", "worker-1"],
      ["beta", "beta", "worker-2"],
      ["gpt-4o", "alpha", "worker-1"],
      ["other", "beta", "worker-2"],
    ] as const) {
      for (let i = 0; i < 3; i++) {
        const r = await chat(model);
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        // The answer names the model that ran it (OpenAI's alias behaviour), and its worker.
        expect(r.body.model).toBe(id);
        expect(r.body.atlas?.workers).toEqual([worker]);
      }
    }
    const completion = await client.completions.create({ model: "other", prompt: "Once upon", max_tokens: 4 });
    expect(completion.model).toBe("beta");
  });

  it("keeps a session used with both models on each model's own worker", async () => {
    for (let turn = 1; turn <= 2; turn++) {
      for (const [model, worker] of [
        ["alpha", "worker-1"],
        ["beta", "worker-2"],
      ] as const) {
        const r = await chat(model, { session_id: "shared.1" });
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body.atlas).toMatchObject({ session_id: "shared.1", workers: [worker] });
      }
    }
  });

  it("answers an unknown model with OpenAI's 404 model_not_found", async () => {
    const r = await chat("nope");
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({ code: "model_not_found", param: "model", type: "not_found_error" });
    expect(r.body.error?.message).toContain("'nope'");
    await expect(client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] })).rejects.toBeInstanceOf(
      OpenAI.NotFoundError,
    );
  });
});

describe("metrics", () => {
  type Family = { name: string; metrics: { labels?: Record<string, string>; value?: string }[] };
  let text = "";
  const scrape = async (): Promise<Map<string, Family>> => {
    text = await (await fetch(`${baseUrl}/metrics`)).text();
    return new Map((parsePrometheusTextFormat(text) as Family[]).map((f) => [f.name, f]));
  };
  const modelsOf = (f: Family | undefined) => [...new Set((f?.metrics ?? []).map((m) => m.labels?.model ?? "(none)"))].sort();

  it("labels the request metrics with the served model an alias resolves to, never with an unknown name", async () => {
    // Every request of the tests above: 16 chats that ran (aliases under their model), the
    // completion, and the two 404s under no model.
    const requests = (f: Map<string, Family>) => f.get("atlas_requests_total")?.metrics ?? [];
    const total = (f: Map<string, Family>) => requests(f).reduce((a, m) => a + Number(m.value), 0);
    await expect.poll(async () => total(await scrape()), { timeout: 15_000, message: JSON.stringify(requests(await scrape())) }).toBe(19);
    const families = await scrape();
    expect(modelsOf(families.get("atlas_requests_total"))).toEqual(["(none)", "alpha", "beta"]);
    expect(requests(families)).toEqual(
      expect.arrayContaining([
        { labels: { endpoint: "chat.completions", status: "error" }, value: "2" },
        { labels: { endpoint: "chat.completions", status: "ok", model: "alpha" }, value: "8" },
        { labels: { endpoint: "chat.completions", status: "ok", model: "beta" }, value: "8" },
        { labels: { endpoint: "completions", status: "ok", model: "beta" }, value: "1" },
      ]),
    );
    // Per-model latencies (the text itself: the parser keeps one series of a histogram only).
    const counted = [...text.matchAll(/^atlas_model_request_duration_seconds_count\{(.*)\} (\d+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(counted).toEqual(['model="alpha" 8', 'model="beta" 9']);
    expect(text).toMatch(/^atlas_model_time_to_first_token_seconds_bucket\{model="beta",le="\+Inf"\} 9$/m);
    expect(modelsOf(families.get("atlas_completion_tokens_total"))).toEqual(["(none)", "alpha", "beta"]);
    const generations = families.get("atlas_worker_generations_total")?.metrics.map((m) => m.labels);
    expect(generations).toEqual(
      expect.arrayContaining([
        { worker: "worker-1", model: "alpha" },
        { worker: "worker-2", model: "beta" },
      ]),
    );
  });
});

describe("two models under concurrent load", () => {
  it("routes 48 concurrent requests of both models each to its own worker, and shows each model's pool in status", async () => {
    const models = Array.from({ length: 48 }, (_, i) => (i % 2 === 0 ? "alpha" : "beta"));
    const answers = await Promise.all(models.map((m) => chat(m)));
    answers.forEach((r, i) => {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.model).toBe(models[i]);
      expect(r.body.atlas?.workers).toEqual([models[i] === "alpha" ? "worker-1" : "worker-2"]);
    });
    const status = (await (await fetch(`${baseUrl}/v1/atlas/status`)).json()) as {
      scheduler: { pools: Record<string, { workers: string[]; slots: number; leased: number }> };
    };
    expect(Object.keys(status.scheduler.pools).sort()).toEqual(["alpha", "beta"]);
    expect(status.scheduler.pools.alpha?.workers).toEqual(["worker-1"]);
    expect(status.scheduler.pools.beta?.workers).toEqual(["worker-2"]);
    expect(status.scheduler.pools.alpha?.slots).toBeGreaterThan(0);
  });
});

describe("a configured model without a worker", () => {
  it("is a 503 with Retry-After on an api that has it in ATLAS_MODELS, where other models still answer", async () => {
    const api = await stack.start("api", { ATLAS_MODELS: `gamma=${alphaPath}:0,alpha=${alphaPath}` });
    const url = String((await api.handle.health()).details?.address ?? "");
    const gamma = await chat("gamma", {}, url);
    expect(gamma.status).toBe(503);
    expect(gamma.retryAfter).toBe("2");
    expect(gamma.body.error).toMatchObject({ code: "no_workers", type: "server_error", param: "model" });
    expect(gamma.body.error?.message).toContain("'gamma'");
    expect((await chat("alpha", {}, url)).body.atlas?.workers).toEqual(["worker-1"]);
    expect((await chat("nope", {}, url)).status).toBe(404);
    await api.stop();
  });
});

describe("a model whose workers are gone", () => {
  it("is a 503 with Retry-After (also by alias) while the other model answers, and serves again once a worker is back", async () => {
    await beta.stop();
    // The model it knew is unavailable, not unknown: at once from the scheduler (no live worker serves
    // it), and from the api's own list once discovery sees the worker gone.
    await expect.poll(async () => (await chat("beta")).status, { timeout: 20_000 }).toBe(503);
    const r = await chat("beta");
    expect(r.retryAfter).toBe("2");
    expect(r.body.error).toMatchObject({ code: "no_workers", type: "server_error", param: "model" });
    expect(r.body.error?.message).toContain("'beta'");
    expect((await chat("other")).status).toBe(503);
    // The scheduler says so at once; the api's model list follows at its next discovery round.
    await expect.poll(async () => (await fetch(`${baseUrl}/v1/models/beta`)).status, { timeout: 20_000 }).toBe(503);
    const retrieved = await fetch(`${baseUrl}/v1/models/beta`);
    expect(retrieved.headers.get("retry-after")).toBe("2");
    // The other model goes on, alone in the listing; an unknown name is still a 404.
    expect((await chat("alpha")).body.atlas?.workers).toEqual(["worker-1"]);
    expect((await client.models.list()).data.map((m) => m.id)).toEqual(["alpha", "gpt-4o"]);
    expect((await chat("nope")).status).toBe(404);

    await stack.start("worker", { ATLAS_MODEL: betaPath, ATLAS_MODEL_ID: "beta", ATLAS_WORKER_ID: "worker-3" });
    await expect.poll(async () => (await chat("other")).body.atlas?.workers, { timeout: 20_000 }).toEqual(["worker-3"]);
  });
});
