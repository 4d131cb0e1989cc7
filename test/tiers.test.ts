/**
 * KV tiers across real workers: a drained worker's session resumes on the other worker from
 * L3 with the same greedy output as a session that was never evicted; a session whose worker
 * was SIGKILLed (a real child process) still gets its next turn answered, with the same greedy
 * output; and a worker stopped with SIGTERM saves its slots' sessions to L3 on the way out, so
 * the next turn resumes warm on another worker.
 */
import { Health, SchedulerState } from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

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

function apiBus() {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("no api");
  return bus;
}

function workerHealth(id: string) {
  return apiBus().call(Health, {}, { params: { service: "inference-worker", instance: id }, timeoutMs: 2000 });
}

/** The workers the scheduler leases slots on: alive and not draining. */
async function inRotation(): Promise<string[]> {
  const s = await apiBus().call(SchedulerState, {}, { timeoutMs: 2000 });
  return s.workers
    .filter((w) => w.alive && !w.draining)
    .map((w) => w.worker_id)
    .sort();
}

/**
 * Spawns a worker as a child process and drains every other one, so that the next session's
 * first turn lands on it.
 */
async function soleWorker(id: string) {
  const child = await stack.spawn("worker", { ATLAS_WORKER_ID: id });
  await expect.poll(inRotation, { timeout: 20_000, interval: 200 }).toContain(id);
  for (const other of await inRotation()) {
    if (other === id) continue;
    expect((await fetch(`${stack.baseUrl}/v1/atlas/workers/${other}/drain`, { method: "POST" })).status).toBe(202);
  }
  await expect.poll(inRotation, { timeout: 10_000, interval: 200 }).toEqual([id]);
  return child;
}

/** The reference: the conversation in a session that is never evicted (computed once). */
let reference: Promise<{ a: Reply; b: Reply }> | undefined;
function referenceConversation() {
  reference ??= (async () => {
    const a = await chat("ref", turns("").t1);
    const b = await chat("ref", turns(a.choices[0]?.message.content ?? "").t2);
    expect(b.atlas.cache.outcome).toBe("l1");
    return { a, b };
  })();
  return reference;
}

beforeAll(async () => {
  // Restoring always (not only when the cost model says it is cheaper): on the tiny test model
  // recomputing is about as fast as a restore, and this test is about the restore itself.
  stack = await startStack({ services: ["scheduler", "worker", "api"], workers: 2, env: { ATLAS_KV_RESTORE: "always", ATLAS_SLOTS: "2" } });
  await waitFor(async () => (await inRotation()).join() === "worker-1,worker-2", {
    timeoutMs: 20_000,
    what: "the scheduler to see both workers",
  });
}, 60_000);
afterAll(async () => stack?.close());

describe("drain", () => {
  it("moves a session to L3 and resumes it on the other worker with the same greedy output", async () => {
    const { a: refA, b: refB } = await referenceConversation();
    const ref = turns(refA.choices[0]?.message.content ?? "");

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
  it("answers a session's next turn on another worker after its worker was SIGKILLed, with the same greedy output", async () => {
    const { a: refA, b: refB } = await referenceConversation();
    // The victim runs as a child process, so its death is real: no drain, no goodbye, no more
    // heartbeats, its socket just closes.
    const victim = await soleWorker("victim");
    const a = await chat("survivor", turns("").t1);
    expect(a.atlas.workers).toEqual(["victim"]);
    expect(a.choices[0]?.message.content).toBe(refA.choices[0]?.message.content);

    // A fresh worker to take over, then the kill.
    const fresh = (await stack.start("worker")).bus.instance;
    await expect.poll(inRotation, { timeout: 20_000, interval: 200 }).toEqual([fresh, "victim"].sort());
    victim.kill("SIGKILL");
    await victim.exited;
    expect(victim.child.signalCode).toBe("SIGKILL");

    const b = await chat("survivor", turns(a.choices[0]?.message.content ?? "").t2);
    expect(b.atlas.workers).toHaveLength(1);
    expect(b.atlas.workers[0]).not.toBe("victim");
    expect(b.usage.completion_tokens).toBeGreaterThan(0);
    // The session's KV state died with the victim; the answer is recomputed from the messages
    // and is the same greedy answer as the never-evicted session's.
    expect(b.choices[0]?.message.content).toBe(refB.choices[0]?.message.content);
    // The scheduler declares the victim dead (three missed heartbeats).
    const victimAlive = async () =>
      (await apiBus().call(SchedulerState, {}, { timeoutMs: 2000 })).workers.find((w) => w.worker_id === "victim")?.alive;
    await expect.poll(victimAlive, { timeout: 20_000, interval: 250 }).not.toBe(true);
  }, 90_000);
});

describe("graceful stop", () => {
  it("saves the slots' sessions to L3 on SIGTERM: the next turn restores on another worker, with the same greedy output", async () => {
    const { a: refA, b: refB } = await referenceConversation();
    const victim = await soleWorker("stopped");
    const a = await chat("warm-restart", turns("").t1);
    expect(a.atlas.workers).toEqual(["stopped"]);

    const fresh = (await stack.start("worker")).bus.instance;
    await expect.poll(inRotation, { timeout: 20_000, interval: 200 }).toEqual([fresh, "stopped"].sort());
    // Nothing moved the session out of the slot before the stop (no drain, no other session).
    expect((await workerHealth("stopped")).details?.tiers).toMatchObject({ l2_sessions: 0 });
    victim.kill("SIGTERM");
    await victim.exited;
    expect(victim.child.exitCode).toBe(0);
    // The scheduler stops leasing the stopped worker once its heartbeats stop.
    await expect.poll(inRotation, { timeout: 20_000, interval: 200 }).toEqual([fresh]);

    const b = await chat("warm-restart", turns(a.choices[0]?.message.content ?? "").t2);
    expect(b.atlas.workers).toEqual([fresh]);
    expect(b.atlas.cache.outcome).toBe("l3");
    expect(b.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(a.usage.prompt_tokens);
    expect(b.choices[0]?.message.content).toBe(refB.choices[0]?.message.content);
    expect(a.choices[0]?.message.content).toBe(refA.choices[0]?.message.content);
  }, 90_000);
});
