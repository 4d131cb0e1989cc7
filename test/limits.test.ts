/**
 * Rate limits and admission against a real cluster: requests and tokens per session and for
 * everyone, `ATLAS_MAX_CONCURRENT` with its bounded queue. Each refusal is a 429 or a 503 in
 * OpenAI's format with a `Retry-After` that, honoured, gets the request through; each is an
 * audit record. Input limits (message count, `max_tokens` against the context, sequences per
 * request) are 400s that name the argument.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";

async function send(stack: Stack, method: string, path: string, body?: unknown, signal?: AbortSignal) {
  const res = await fetch(`${stack.baseUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    ...(signal === undefined ? {} : { signal }),
  });
  return res;
}

async function json(res: Response) {
  // biome-ignore lint/suspicious/noExplicitAny: checked with matchers
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body: (await res.json()) as any };
}

const sleepS = (s: number) => new Promise((r) => setTimeout(r, s * 1000 + 50));

function readyStack(env: Record<string, string>, logs?: string[]): Promise<Stack> {
  return startStack({
    services: ["worker", "api"],
    env,
    ...(logs === undefined ? {} : { logDestination: { write: (l) => void logs.push(l) } }),
  }).then(async (stack) => {
    await waitFor(async () => (await send(stack, "GET", "/health")).status === 200);
    return stack;
  });
}

describe("per-session rate limits", () => {
  let stack: Stack;
  const logs: string[] = [];
  beforeAll(async () => {
    stack = await readyStack({ ATLAS_SESSION_RATE_LIMIT_RPM: "30", ATLAS_SESSION_RATE_LIMIT_TPM: "1200" }, logs);
  }, 60_000);
  afterAll(async () => stack?.close());

  it("answers a 429 with Retry-After when a session's requests run out, and lets it through after that", async () => {
    const perMinute = 30; // ATLAS_SESSION_RATE_LIMIT_RPM above
    // The bucket holds a minute's worth and refills one request every 60 / 30 = 2 s, so at least
    // 30 pass; on a slow machine a few more may have refilled before the first refusal.
    const statuses: number[] = [];
    let refused: Awaited<ReturnType<typeof json>> | undefined;
    while (refused === undefined && statuses.length < 10 * perMinute) {
      const res = await send(stack, "GET", "/v1/models");
      if (res.status === 429) refused = await json(res);
      else statuses.push(res.status);
    }
    expect(statuses.length).toBeGreaterThanOrEqual(perMinute);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(refused?.status).toBe(429);
    expect(refused?.body).toEqual({
      error: {
        message: expect.stringMatching(/30 requests per minute/),
        type: "rate_limit_error",
        param: null,
        code: "rate_limit_exceeded",
      },
    });
    // Refused, less than one request is in the bucket: the wait is in (0, 2 s], rounded up to
    // whole seconds, and at least 1 — whatever the machine's speed.
    const refill = Math.ceil(60 / perMinute);
    expect(refused?.retryAfter, "Retry-After").toEqual(expect.stringMatching(/^\d+$/));
    const retryAfter = Number(refused?.retryAfter);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(refill);
    expect(refused?.body.error.message).toContain(`try again in ${retryAfter}s`);
    // Another session has its own bucket.
    const other = await send(stack, "POST", "/v1/completions", {
      model: MODEL,
      prompt: "x",
      max_tokens: 1,
      atlas: { session_id: "other" },
    });
    expect(other.status).toBe(200);
    await other.text();
    await sleepS(retryAfter);
    expect((await send(stack, "GET", "/v1/models")).status).toBe(200);
    const record = logs.map((l) => JSON.parse(l)).find((r) => r.audit === "limit.rate");
    expect(record).toMatchObject({ outcome: "refused", tenant: "default", scope: "session", kind: "requests", retry_after_s: retryAfter });
  });

  it("counts tokens (prompt estimate + max_tokens, settled to the real usage) and recovers after Retry-After", async () => {
    const ask = () =>
      send(stack, "POST", "/v1/chat/completions", {
        model: MODEL,
        messages: [{ role: "user", content: "Count." }],
        max_tokens: 200,
        ignore_eos: true,
        atlas: { session_id: "tokens" },
      }).then(json);
    // Until the first refusal: the bucket refills 20 tokens a second, so on a slow machine more
    // requests pass before it runs out.
    const answers = [];
    for (let i = 0; i < 50; i++) {
      const a = await ask();
      answers.push(a);
      if (a.status !== 200) break;
    }
    const refused = answers.at(-1);
    expect(answers.length).toBeGreaterThanOrEqual(5); // 1200 tokens hold five ~220-token requests
    expect(refused?.status).toBe(429);
    expect(refused?.body.error).toMatchObject({ type: "rate_limit_error", code: "tokens_rate_limit_exceeded" });
    expect(Number(refused?.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(refused?.retryAfter)).toBeLessThanOrEqual(12);
    await sleepS(Number(refused?.retryAfter));
    expect((await ask()).status).toBe(200);
  });
});

describe("input limits", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await readyStack({ ATLAS_MAX_MESSAGES: "4", ATLAS_CTX_SIZE: "512" });
  }, 60_000);
  afterAll(async () => stack?.close());

  it("refuses too many messages, max_tokens beyond the context and too many sequences with a 400 naming the argument", async () => {
    const user = { role: "user", content: "x" };
    const many = await json(await send(stack, "POST", "/v1/chat/completions", { model: MODEL, messages: Array(5).fill(user) }));
    expect(many.status).toBe(400);
    expect(many.body.error).toMatchObject({ type: "invalid_request_error", param: "messages", code: "too_many_messages" });
    const big = await json(await send(stack, "POST", "/v1/chat/completions", { model: MODEL, messages: [user], max_tokens: 512 }));
    expect(big.status).toBe(400);
    expect(big.body.error).toMatchObject({ param: "max_tokens", message: expect.stringContaining("512") });
    const bigNew = await json(
      await send(stack, "POST", "/v1/chat/completions", { model: MODEL, messages: [user], max_completion_tokens: 9999 }),
    );
    expect(bigNew.body.error.param).toBe("max_completion_tokens");
    const seqs = await json(await send(stack, "POST", "/v1/completions", { model: MODEL, prompt: Array(20).fill("x"), n: 10 }));
    expect(seqs.status).toBe(400);
    expect(seqs.body.error).toMatchObject({ param: "n" });
    const session = await json(
      await send(stack, "POST", "/v1/chat/completions", { model: MODEL, messages: [user], atlas: { session_id: "bad id!" } }),
    );
    expect(session.status).toBe(400);
    expect(session.body.error.param).toBe("atlas.session_id");
    expect((await send(stack, "POST", "/v1/chat/completions", { model: MODEL, messages: [user], max_tokens: 2 })).status).toBe(200);
  });
});

describe("admission and the global rate limit", () => {
  let stack: Stack;
  const logs: string[] = [];
  beforeAll(async () => {
    stack = await readyStack(
      {
        ATLAS_MAX_CONCURRENT: "1",
        ATLAS_ADMISSION_QUEUE: "1",
        ATLAS_ADMISSION_WAIT_MS: "1500",
        ATLAS_RATE_LIMIT_RPM: "60",
        ATLAS_CTX_SIZE: "16384",
      },
      logs,
    );
  }, 60_000);
  afterAll(async () => stack?.close());

  const long = (signal: AbortSignal) =>
    send(stack, "POST", "/v1/completions", { model: MODEL, prompt: "Once", max_tokens: 15_000, ignore_eos: true, stream: true }, signal);
  const short = () => send(stack, "POST", "/v1/completions", { model: MODEL, prompt: "Hi", max_tokens: 2 }).then(json);
  const queuedNow = async () =>
    ((await (await send(stack, "GET", "/v1/atlas/status")).json()) as { api: { admission: { queued: number } } }).api.admission.queued;

  it("runs ATLAS_MAX_CONCURRENT at once, queues a bounded number, refuses the rest with a 503 and Retry-After, and recovers", async () => {
    const first = new AbortController();
    const running = await long(first.signal);
    expect(running.status).toBe(200);
    await running.body?.getReader().read(); // it runs
    const queued = short(); // waits for the one place…
    await expect.poll(queuedNow).toBe(1);
    const full = await short(); // …and the queue holds one: refused at once
    expect(full.status).toBe(503);
    expect(full.retryAfter).toBe("1");
    expect(full.body).toEqual({
      error: { message: expect.stringMatching(/capacity/), type: "server_error", param: null, code: "server_overloaded" },
    });
    const timedOut = await queued; // the place never freed within ATLAS_ADMISSION_WAIT_MS
    expect(timedOut.status).toBe(503);
    expect(timedOut.retryAfter).toBe("2");

    // A queued request runs as soon as the place frees.
    const waiting = short();
    await expect.poll(queuedNow).toBe(1);
    first.abort();
    expect((await waiting).status).toBe(200);
    expect((await short()).status).toBe(200);
    const refusals = logs.map((l) => JSON.parse(l)).filter((r) => r.audit === "limit.admission");
    expect(refusals.map((r) => r.reason).sort()).toEqual(["queue_full", "timeout"]);
  });

  it("refuses everyone with a 429 once the global request rate is used up, and recovers after Retry-After", async () => {
    let refused: Awaited<ReturnType<typeof json>> | undefined;
    for (let i = 0; i < 1000 && refused === undefined; i++) {
      const r = await json(await send(stack, "GET", "/v1/models"));
      if (r.status === 429) refused = r;
    }
    expect(refused?.body.error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    expect(refused?.body.error.message).toMatch(/this server/);
    expect(refused?.retryAfter).toBe("1");
    await sleepS(1);
    expect((await send(stack, "GET", "/v1/models")).status).toBe(200);
  });
});
