/**
 * A rolling restart under load: two workers (real child processes), eight conversations going
 * on at once, and one worker stopped with SIGTERM in the middle. The stopping worker leaves
 * rotation at once (a last heartbeat says it is draining), finishes what it runs, and saves its
 * slots' sessions to L3; no request fails, and each of its sessions' first turn after it exited
 * is restored from L3 on the other worker.
 */
import { SchedulerState } from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

type Reply = {
  choices: { message: { content: string } }[];
  usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  atlas: { cache: { outcome: string }; workers: string[] };
};

let stack: Stack;

async function chat(session: string, messages: { role: string; content: string }[]) {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "atlas-tiny", messages, max_tokens: 8, temperature: 0, atlas: { session_id: session } }),
  });
  return { status: res.status, body: (await res.json()) as Reply };
}

async function inRotation(): Promise<string[]> {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("no api");
  const s = await bus.call(SchedulerState, {}, { timeoutMs: 2000 });
  return s.workers
    .filter((w) => w.alive && !w.draining)
    .map((w) => w.worker_id)
    .sort();
}

beforeAll(async () => {
  // Restore whenever there is a snapshot (on the tiny model recomputing costs about as much).
  stack = await startStack({ services: ["scheduler", "api"], env: { ATLAS_KV_RESTORE: "always", ATLAS_SLOTS: "4" } });
}, 60_000);
afterAll(async () => stack?.close());

describe("rolling restart", () => {
  it("stops a worker under load without a failed request; its idle sessions resume from L3 on the other worker", async () => {
    const a = await stack.spawn("worker", { ATLAS_WORKER_ID: "rolling-a" });
    const b = await stack.spawn("worker", { ATLAS_WORKER_ID: "rolling-b" });
    await expect.poll(inRotation, { timeout: 20_000, interval: 200 }).toEqual(["rolling-a", "rolling-b"]);

    // Four conversations keep talking through the stop; eight are quiet while it happens.
    const busy = Array.from({ length: 4 }, (_, i) => `busy-${i}`);
    const quiet = Array.from({ length: 8 }, (_, i) => `quiet-${i}`);
    const history = new Map<string, { role: string; content: string }[]>();
    const home = new Map<string, string>();
    const failures: string[] = [];
    let served = 0;
    const turn = async (s: string, i: number): Promise<Reply | undefined> => {
      const messages = [...(history.get(s) ?? []), { role: "user", content: `Turn ${i} of ${s}: tell me more about the sea.` }];
      const r = await chat(s, messages);
      if (r.status !== 200) {
        failures.push(`${s} turn ${i}: ${r.status} ${JSON.stringify(r.body)}`);
        return undefined;
      }
      served += 1;
      history.set(s, [...messages, { role: "assistant", content: r.body.choices[0]?.message.content ?? "" }]);
      home.set(s, r.body.atlas.workers[0] ?? "");
      return r.body;
    };
    // Two turns each, all at once, so that both workers hold sessions (in slots, and in L2).
    for (let i = 1; i <= 2; i++) await Promise.all([...busy, ...quiet].map((s) => turn(s, i)));
    const quietOnA = quiet.filter((s) => home.get(s) === "rolling-a");
    expect(quietOnA.length).toBeGreaterThan(0);

    let stop = false;
    const load = Promise.all(
      busy.map(async (s) => {
        for (let i = 3; !stop; i++) await turn(s, i);
      }),
    );
    const servedBefore = served;
    await expect.poll(() => served, { timeout: 10_000 }).toBeGreaterThan(servedBefore + 8);
    a.kill("SIGTERM");
    // Its last heartbeat says it is draining: it leaves rotation at once, not after 3 missed beats.
    await expect.poll(inRotation, { timeout: 5000, interval: 50 }).toEqual(["rolling-b"]);
    await a.exited;
    expect(a.child.exitCode).toBe(0);
    const servedAtExit = served;
    await expect.poll(() => served, { timeout: 10_000 }).toBeGreaterThan(servedAtExit + 8);
    stop = true;
    await load;

    expect(failures).toEqual([]);
    for (const s of quietOnA) {
      const r = (await turn(s, 3)) as Reply;
      expect(r.atlas.workers, s).toEqual(["rolling-b"]);
      expect(r.atlas.cache.outcome, s).toBe("l3");
      expect(r.usage.prompt_tokens_details.cached_tokens, s).toBeGreaterThan(0);
    }
    expect(failures).toEqual([]);
    b.kill("SIGTERM");
    await b.exited;
  }, 120_000);
});
