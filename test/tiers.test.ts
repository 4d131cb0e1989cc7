/**
 * KV tiers across real workers: a drained worker's session resumes on the other worker from
 * L3 with the same greedy output as a session that was never evicted, and a session whose
 * worker died still gets its next turn answered.
 */
import { Health } from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;
const MODEL = "atlas-tiny";

type Reply = {
  choices: { message: { content: string } }[];
  usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  atlas: { cache: { outcome: string; cached_tokens: number }; workers: string[] };
};

async function chat(session: string, messages: { role: string; content: string }[]) {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: 24, temperature: 0, atlas: { session_id: session } }),
  });
  const body = await res.json();
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body as Reply;
}

/** A two-turn conversation: turn 1, then turn 2 with turn 1's reply in the history. */
function turns(reply1: string) {
  const t1 = [
    { role: "system", content: "You are a patient assistant. ".repeat(20) },
    { role: "user", content: "Describe the harbour at dawn." },
  ];
  return { t1, t2: [...t1, { role: "assistant", content: reply1 }, { role: "user", content: "And at night?" }] };
}

async function workerHealth(id: string) {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("no api");
  return bus.call(Health, {}, { params: { service: "inference-worker", instance: id }, timeoutMs: 2000 });
}

beforeAll(async () => {
  // Restoring always (not only when the cost model says it is cheaper): on the tiny test model
  // recomputing is about as fast as a restore, and this test is about the restore itself.
  stack = await startStack({ services: ["scheduler", "worker", "api"], workers: 2, env: { ATLAS_KV_RESTORE: "always", ATLAS_SLOTS: "2" } });
  for (let i = 0; i < 100; i++) {
    const ok = await Promise.all(
      ["worker-1", "worker-2"].map((w) =>
        workerHealth(w).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (ok.every(Boolean)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 1200)); // the scheduler has seen both heartbeats
});
afterAll(async () => stack?.close());

describe("drain", () => {
  it("moves a session to L3 and resumes it on the other worker with the same greedy output", async () => {
    // The reference: a session that is never evicted.
    const refA = await chat("ref", turns("").t1);
    const ref = turns(refA.choices[0]?.message.content ?? "");
    const refB = await chat("ref", ref.t2);
    expect(refB.atlas.cache.outcome).toBe("l1");

    // The same conversation in another session, whose worker is drained between the turns.
    const a = await chat("moving", ref.t1);
    expect(a.choices[0]?.message.content).toBe(refA.choices[0]?.message.content);
    const home = a.atlas.workers[0] ?? "";
    const drain = await fetch(`${stack.baseUrl}/v1/atlas/workers/${home}/drain`, { method: "POST" });
    expect(drain.status).toBe(202);
    await expect.poll(async () => (await workerHealth(home)).details?.tiers, { timeout: 10_000 }).toMatchObject({ drained: true });

    const b = await chat("moving", ref.t2);
    expect(b.atlas.workers[0]).not.toBe(home);
    expect(b.atlas.cache.outcome).toBe("l3");
    expect(b.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(a.usage.prompt_tokens);
    expect(b.choices[0]?.message.content).toBe(refB.choices[0]?.message.content);
  });

  it("refuses to drain an unknown worker", async () => {
    const res = await fetch(`${stack.baseUrl}/v1/atlas/workers/nope/drain`, { method: "POST" });
    expect(res.status).toBe(404);
  });
});

describe("worker loss", () => {
  it("answers a session's next turn after its worker died", async () => {
    // Only one worker is left in rotation (the other was drained above); start a fresh one.
    await stack.start("worker");
    await new Promise((r) => setTimeout(r, 1200));
    const conv = turns("");
    const a = await chat("survivor", conv.t1);
    const home = a.atlas.workers[0] ?? "";
    const victim = stack.running.get("worker")?.find((r) => r.bus.instance === home);
    if (victim === undefined) throw new Error(`worker ${home} not found`);
    victim.bus.nc.close(); // gone without a goodbye: no drain, no more heartbeats or answers
    const b = await chat("survivor", turns(a.choices[0]?.message.content ?? "").t2);
    expect(b.atlas.workers[0]).not.toBe(home);
    expect(b.choices[0]?.message.content.length).toBeGreaterThanOrEqual(0);
    expect(b.usage.completion_tokens).toBeGreaterThan(0);
  });
});
