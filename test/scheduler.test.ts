/**
 * The context pool across real services: two workers on the generated model, the scheduler
 * leasing their slots with session affinity, batches, and a caller that gives up. Leader
 * failover under load runs with real SIGKILLed schedulers in `faults_scheduler.test.ts` and
 * `fencing.test.ts`.
 */
import { LeaseAcquire, LeaseCancel, SchedulerState } from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;
const MODEL = "atlas-tiny";

type Reply = {
  choices: { message: { content: string }; finish_reason: string }[];
  usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  atlas: {
    cache: { outcome: string; cached_tokens: number };
    workers: string[];
    slots: { worker: string; slot: number; fencing_token: number | null }[];
  };
};

async function chat(
  messages: { role: string; content: string }[],
  atlas: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
) {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: 16, temperature: 0, atlas, ...extra }),
  });
  return { status: res.status, degraded: res.headers.get("x-atlas-degraded"), body: (await res.json()) as Reply };
}

async function schedulerState() {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("no api");
  return bus.call(SchedulerState, {}, { timeoutMs: 2000 });
}

beforeAll(async () => {
  stack = await startStack({ services: ["scheduler", "worker", "api"], workers: 2 });
  // The leader knows both workers once their first heartbeats arrived.
  for (let i = 0; i < 100; i++) {
    const s = await schedulerState().catch(() => undefined);
    if (s !== undefined && s.workers.filter((w) => w.alive).length === 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
});
afterAll(async () => stack?.close());

describe("leases", () => {
  it("runs a request under a fenced lease, not degraded", async () => {
    const r = await chat([{ role: "user", content: "Hello there" }]);
    expect(r.status).toBe(200);
    expect(r.degraded).toBeNull();
    expect(r.body.atlas.slots[0]?.fencing_token).toBeGreaterThan(0);
    await expect.poll(async () => (await schedulerState()).leases, { timeout: 3000 }).toBe(0);
  });

  it("brings a session's second turn back to its slot and evaluates only the new tokens", async () => {
    const session = { session_id: "conv-1" };
    const turn1 = [{ role: "user", content: "Tell me about the sea." }];
    const a = await chat(turn1, session);
    expect(a.status).toBe(200);
    const reply = a.body.choices[0]?.message.content ?? "";
    const turn2 = [...turn1, { role: "assistant", content: reply }, { role: "user", content: "And the mountains?" }];
    const b = await chat(turn2, session);
    expect(b.status).toBe(200);
    expect(b.body.atlas.slots[0]).toMatchObject({ worker: a.body.atlas.slots[0]?.worker, slot: a.body.atlas.slots[0]?.slot });
    expect(b.body.atlas.cache.outcome).toBe("l1");
    // Everything of turn 1 — its prompt and the reply's own tokens — was reused.
    expect(b.body.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(
      a.body.usage.prompt_tokens + a.body.usage.completion_tokens - 1,
    );
  });

  it("leases several slots at once for a batch", async () => {
    const r = await chat([{ role: "user", content: "Batch" }], { batch_size: 3 }, { n: 3 });
    expect(r.status).toBe(200);
    const slots = r.body.atlas.slots.map((s) => `${s.worker}/${s.slot}`);
    expect(new Set(slots).size).toBe(3);
  });
});

describe("a caller that gives up", () => {
  it("has its queued acquire dropped and its granted lease released at once", async () => {
    const bus = stack.running.get("api")?.[0]?.bus;
    if (bus === undefined) throw new Error("no api");
    const ask = (request_id: string, wait_ms: number) =>
      bus.call(
        LeaseAcquire,
        { request_id, holder: "test", tenant: "t", model: MODEL, count: 4, wait_ms, ttl_ms: 60_000 },
        { timeoutMs: wait_ms + 2000 },
      );
    await expect.poll(async () => (await schedulerState()).leases, { timeout: 5000 }).toBe(0);
    const all = await ask("hold-all", 1000); // every slot of both workers
    const waiting = ask("gives-up", 10_000).catch((e: unknown) => e);
    await expect.poll(async () => (await schedulerState()).queued, { timeout: 3000 }).toBe(1);
    await expect(bus.call(LeaseCancel, { request_id: "gives-up", holder: "test" })).resolves.toEqual({ cancelled: 1 });
    expect(await waiting).toMatchObject({ code: "cancelled" });
    expect((await schedulerState()).queued).toBe(0);
    // A lease already granted is released by the same message.
    await expect(bus.call(LeaseCancel, { request_id: "hold-all", holder: "test" })).resolves.toEqual({ cancelled: all.leases.length });
    expect((await schedulerState()).leases).toBe(0);
  });
});
