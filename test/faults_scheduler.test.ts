/**
 * Fault: the leader scheduler is SIGKILLed under load. The schedulers are real child processes,
 * so the leader vanishes without resigning: its claim in KV must go stale before the standby
 * takes over (test/scheduler.test.ts runs the in-process version of this).
 *
 * What must hold: every request is answered (200) throughout; the standby becomes leader and
 * rebuilds the pool; no slot is ever leased twice — every granted fencing token is unique and
 * the new leader's tokens are above the old leader's.
 */
import { SchedulerState } from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildService, type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;
let leader: ChildService;
let standby: ChildService;

type Reply = { atlas?: { slots: { worker: string; slot: number; fencing_token: number | null }[] }; error?: unknown };

async function poolState() {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("no api");
  return bus.call(SchedulerState, {}, { timeoutMs: 2000 });
}

async function chat(i: number): Promise<{ status: number; body: Reply }> {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: "user", content: `load ${i}` }],
      max_tokens: 6,
      atlas: { session_id: `s-${i % 6}` },
    }),
  });
  return { status: res.status, body: (await res.json()) as Reply };
}

beforeAll(async () => {
  stack = await startStack({ services: ["worker", "api"], workers: 2 });
  leader = await stack.spawn("scheduler");
  let leaderId = "";
  await waitFor(
    async () => {
      const s = await poolState();
      leaderId = s.leader;
      return s.workers.filter((w) => w.alive).length === 2;
    },
    { timeoutMs: 20_000, what: "the first scheduler to lead and see both workers" },
  );
  standby = await stack.spawn("scheduler");
  // The standby follows the heartbeats; the leader is still the first one.
  await new Promise((r) => setTimeout(r, 1500));
  expect((await poolState()).leader).toBe(leaderId);
}, 90_000);
afterAll(async () => stack?.close());

describe("the leader scheduler SIGKILLed under load", () => {
  it("keeps answering every request, the standby takes over, and no slot is leased twice", async () => {
    const before = await poolState();
    const results: { status: number; body: Reply }[] = [];
    let transportRetries = 0;
    // As OpenAI's SDK does, a request whose connection broke before any answer is sent again.
    const send = (i: number) =>
      chat(i).catch(() => {
        transportRetries += 1;
        return chat(i);
      });
    let stop = false;
    const load = (async () => {
      let i = 0;
      while (!stop) results.push(...(await Promise.all(Array.from({ length: 4 }, () => send(i++)))));
    })();
    await expect.poll(() => results.length, { timeout: 10_000 }).toBeGreaterThan(12);

    leader.kill("SIGKILL");
    await leader.exited;

    await expect
      .poll(async () => (await poolState().catch(() => ({ leader: before.leader }))).leader, { timeout: 15_000, interval: 250 })
      .not.toBe(before.leader);
    const after = await poolState();
    expect(after.term).toBeGreaterThanOrEqual(1);
    await expect.poll(async () => (await poolState()).workers.filter((w) => w.alive).length, { timeout: 5000 }).toBe(2);
    // Load keeps going under the new leader, with leases again (not degraded).
    const mark = results.length;
    await expect
      .poll(() => results.slice(mark).filter((r) => (r.body.atlas?.slots[0]?.fencing_token ?? null) !== null).length, {
        timeout: 15_000,
      })
      .toBeGreaterThan(8);
    stop = true;
    await load;

    expect(results.filter((r) => r.status !== 200).map((r) => r.body)).toEqual([]);
    expect(transportRetries).toBeLessThanOrEqual(2);
    const tokens = results.flatMap((r) => r.body.atlas?.slots.map((s) => s.fencing_token) ?? []).filter((t): t is number => t !== null);
    expect(new Set(tokens).size).toBe(tokens.length);
    const final = await poolState();
    expect(final.fencing_token).toBeGreaterThan(before.fencing_token);
    // Every lease was given back: nothing is left on any slot.
    await expect.poll(async () => (await poolState()).leases, { timeout: 5000 }).toBe(0);
    expect(standby.child.exitCode).toBeNull();
  });
});
