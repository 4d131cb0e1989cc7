/**
 * The context pool across real services: two workers on the generated model, the scheduler
 * leasing their slots with session affinity, and scheduler failover under load.
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

describe("failover", () => {
  it("keeps serving when the leader dies: a standby takes over and no slot is leased twice", async () => {
    await stack.start("scheduler"); // a standby
    const before = await schedulerState();
    const leaderId = before.leader;
    const results: Awaited<ReturnType<typeof chat>>[] = [];
    let transportErrors = 0;
    // As the OpenAI SDK does, a request whose connection broke before any answer is sent again
    // (twice at most); a request that still finds no connection is counted, not fatal to the load.
    const send = async (i: number): Promise<Awaited<ReturnType<typeof chat>> | undefined> => {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          return await chat([{ role: "user", content: `load ${i}` }], {});
        } catch {
          transportErrors += 1;
        }
      }
      return undefined;
    };
    let stop = false;
    const load = (async () => {
      let i = 0;
      while (!stop) {
        const batch = await Promise.all(Array.from({ length: 4 }, () => send(i++)));
        for (const r of batch) if (r !== undefined) results.push(r);
      }
    })();
    await expect.poll(() => results.length, { timeout: 30_000 }).toBeGreaterThan(8);
    // Kill the leader without a goodbye: its claim must go stale before the standby takes over.
    const leader = stack.running.get("scheduler")?.find((r) => r.bus.instance === leaderId);
    if (leader === undefined) throw new Error("leader not found");
    leader.bus.nc.close();
    await expect
      .poll(async () => (await schedulerState().catch(() => ({ leader: leaderId }))).leader, { timeout: 30_000 })
      .not.toBe(leaderId);
    const after = results.length;
    await expect.poll(() => results.length, { timeout: 30_000 }).toBeGreaterThan(after + 8);
    stop = true;
    await load;
    const failed = results.filter((r) => r.status !== 200);
    expect(failed.map((r) => r.body)).toEqual([]);
    expect(transportErrors).toBeLessThanOrEqual(Math.max(2, results.length / 50));
    // Every granted fencing token is unique: no slot was handed to two holders under one token.
    const tokens = results.flatMap((r) => r.body.atlas.slots.map((s) => s.fencing_token)).filter((t): t is number => t !== null);
    expect(new Set(tokens).size).toBe(tokens.length);
    expect((await schedulerState()).fencing_token).toBeGreaterThan(before.fencing_token);
  }, 120_000);
});
