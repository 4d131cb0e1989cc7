/**
 * Fault: an inference worker is SIGKILLed in the middle of a streamed answer. The workers are
 * real child processes (`node --import tsx services/inference-worker/src/main.ts`), so the kill
 * is real: no goodbye, no error message on NATS, the socket just closes.
 *
 * What must hold: the client's stream ends with a well-formed OpenAI error event (not a hang
 * until some idle timeout, not a silently dropped connection); requests that had not started
 * yet are answered by the other worker; the scheduler declares the dead worker dead and no
 * lease stays on it; and the api keeps answering.
 */
import { SchedulerState } from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSse } from "./helpers/sse.ts";
import { type ChildService, type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;
const workers = new Map<string, ChildService>();

async function poolState() {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("no api");
  return bus.call(SchedulerState, {}, { timeoutMs: 2000 });
}

/** Requests waiting for a slot: at the scheduler, and at the api for its slot credits. */
async function waitingForSlot(): Promise<number> {
  const status = (await (await fetch(`${stack.baseUrl}/v1/atlas/status`)).json()) as { api?: { slot_credits?: { waiting: number }[] } };
  const atApi = (status.api?.slot_credits ?? []).reduce((n, c) => n + c.waiting, 0);
  return (await poolState()).queued + atApi;
}

/** The worker whose one slot is leased right now, once there is exactly `busy` such workers. */
async function busyWorkers(): Promise<string[]> {
  const s = await poolState();
  return s.workers.filter((w) => w.alive && w.slots.some((x) => x.lease_id !== null)).map((w) => w.worker_id);
}

function longStream(signal?: AbortSignal) {
  return fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: "user", content: "Tell a very long story." }],
      max_tokens: 15_000,
      ignore_eos: true,
      stream: true,
    }),
    ...(signal === undefined ? {} : { signal }),
  });
}

beforeAll(async () => {
  // One slot per worker, a long context: one streamed answer keeps a worker busy for seconds.
  stack = await startStack({ services: ["scheduler", "api"], env: { ATLAS_SLOTS: "1", ATLAS_CTX_SIZE: "16384" } });
  const [a, b] = await Promise.all([
    stack.spawn("worker", { ATLAS_WORKER_ID: "proc-a" }),
    stack.spawn("worker", { ATLAS_WORKER_ID: "proc-b" }),
  ]);
  workers.set("proc-a", a as ChildService);
  workers.set("proc-b", b as ChildService);
  await waitFor(async () => (await poolState()).workers.filter((w) => w.alive).length === 2, {
    timeoutMs: 20_000,
    what: "the scheduler to see both workers",
  });
  // …and the api's model catalog (refreshed from discovery every 2 s) to list both.
  await waitFor(
    async () => {
      const r = await fetch(`${stack.baseUrl}/v1/models`);
      return ((await r.json()) as { data: unknown[] }).data.length === 1;
    },
    { timeoutMs: 10_000, what: "the model catalog" },
  );
}, 90_000);
afterAll(async () => stack?.close());

describe("a worker SIGKILLed mid-stream", () => {
  it("ends the client's stream with an error event, serves waiting requests on the other worker, and reclaims its lease", async () => {
    // The first long stream takes one worker's only slot…
    const first = await longStream();
    expect(first.status).toBe(200);
    const events = readSse(first);
    await events.next(10_000); // the role chunk: generation has started
    await events.next(10_000);
    await expect.poll(busyWorkers, { timeout: 5000 }).toHaveLength(1);
    const [victimId = ""] = await busyWorkers();
    const survivorId = victimId === "proc-a" ? "proc-b" : "proc-a";
    // …a second one takes the other worker's, so new requests wait for a slot (not started).
    const ac = new AbortController();
    const second = await longStream(ac.signal);
    expect(second.status).toBe(200);
    const secondEvents = readSse(second);
    await secondEvents.next(10_000);
    await expect.poll(busyWorkers, { timeout: 5000 }).toHaveLength(2);
    const waiting = Array.from({ length: 3 }, (_, i) =>
      fetch(`${stack.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: `waiting ${i}` }], max_tokens: 4, atlas: {} }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as { atlas?: { workers: string[] }; error?: unknown } })),
    );
    // They wait: at the api, which holds both slots as its credits (docs/scheduler.md), or at the scheduler.
    await expect.poll(waitingForSlot, { timeout: 5000 }).toBeGreaterThan(0);

    workers.get(victimId)?.kill("SIGKILL");

    // The stream ends — within the read timeout, far below the 60 s idle timeout — with an error event.
    const rest = await events.rest(15_000);
    const last = rest.at(-1) ?? "";
    expect(last).not.toBe("[DONE]");
    const error = JSON.parse(last) as { error: Record<string, unknown> };
    expect(error).toEqual({
      error: { message: expect.any(String), type: "server_error", param: null, code: expect.any(String) },
    });
    expect(JSON.stringify(error)).not.toMatch(/proc-|worker\.|nats|stack|at .*\.ts/i);

    // The scheduler declares the worker dead (three missed heartbeats) and no lease stays on it.
    await expect
      .poll(
        async () => {
          const w = (await poolState()).workers.find((x) => x.worker_id === victimId);
          return w === undefined || (!w.alive && w.slots.every((s) => s.lease_id === null));
        },
        { timeout: 10_000, interval: 250 },
      )
      .toBe(true);

    // The waiting requests run on the survivor once its slot is free.
    ac.abort();
    const answers = await Promise.all(waiting);
    for (const a of answers) {
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      expect(a.body.atlas?.workers).toEqual([survivorId]);
    }
    await expect.poll(async () => (await poolState()).leases, { timeout: 5000 }).toBe(0);
  });

  it("keeps answering with the survivor, not degraded", async () => {
    const res = await fetch(`${stack.baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "After", max_tokens: 3 }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-atlas-degraded")).toBeNull();
  });
});
