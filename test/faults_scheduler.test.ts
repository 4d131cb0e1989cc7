/**
 * Fault: the leader scheduler is SIGKILLed under load. The schedulers are real child processes,
 * so the leader vanishes without resigning: its claim in KV must go stale before the standby
 * takes over. (test/fencing.test.ts covers a stale lease of a dead leader reaching a worker.)
 *
 * Every lease is recorded from the workers' side: a worker's `generation` metric event names the
 * slot and fencing token a sequence ran under, when the worker admitted it (`started_at`) and
 * when it ended (`ts`). The workers run in this process, so every time is on one clock.
 *
 * Besides the load of short chat requests (milliseconds each: none is still running when the
 * new leader takes over), the test holds one slot of each worker through the failover: it takes
 * two leases from the old leader itself and runs a generation under each, straight on the
 * workers, with room for far more tokens than the test lets it make; once the new leader has
 * served the load for a while, the test stops them and gives the leases back. They span the
 * takeover because the test ends them, not because of how fast the model is.
 *
 * What must hold:
 * - every request is answered 200 throughout (a stale lease refused by a worker, or a
 *   generation taken over on its slot, would fail one), and every lease a response reports
 *   ran on the worker and slot it names;
 * - the held generations run until the test stops them, and the new leader knows their leases
 *   (restored from the old leader's: its pool shows them on their slots);
 * - the standby becomes leader, sees both workers, and grants leases again (not degraded);
 * - no slot is leased twice. On each (worker, slot), ordered by admission, every leased
 *   interval [started_at, ts] begins no earlier than the previous one ended, and its token is
 *   higher, or the same (the same lease: a slot credit that ran its holder's next request). A release is sent only after the worker ended the sequence, and the slot is granted
 *   again only after that release, so one lease per slot yields disjoint intervals. Two live
 *   leases on one slot would show as a fenced takeover: the newer token admitted while the older
 *   generation still runs (the worker aborts it; it ends after the newer one started: an
 *   overlap), or, should both fall in one millisecond, as a cancelled leased generation — so
 *   none may be cancelled either. No lease expires here (short generations under 30 s
 *   leases; the held ones have 600 s);
 * - every token the new leader granted — on requests sent after the old leader's process had
 *   exited — is above the highest token any worker admitted before the SIGKILL;
 * - every lease is given back in the end: the pool holds none.
 */
import { Bus, type NatsBus } from "@atlas/bus";
import {
  type Lease,
  LeaseAcquire,
  LeaseRelease,
  MetricEvents,
  SchedulerState,
  ServiceName,
  schedulerBuckets,
  WorkerGenerate,
} from "@atlas/contracts";
import { leaseKey } from "@atlas/scheduler";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildService, type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;
let bus: NatsBus;
let leader: ChildService;
let standby: ChildService;

type Slot = { worker: string; slot: number; fencing_token: number | null };
type Reply = { atlas?: { slots: Slot[] }; error?: unknown };

/** One lease's hold on a slot, as the worker saw it. */
interface Interval {
  request: string;
  worker: string;
  slot: number;
  token: number;
  start: number;
  end: number;
  status: string;
}
const intervals: Interval[] = [];

async function poolState() {
  return bus.call(SchedulerState, {}, { timeoutMs: 2000 });
}

async function chat(i: number): Promise<{ status: number; body: Reply }> {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": `load-${i}` },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: "user", content: `load ${i}` }],
      max_tokens: 6,
      atlas: { session_id: `s-${i % 6}` },
    }),
  });
  return { status: res.status, body: (await res.json()) as Reply };
}

/** A long generation the test runs under a lease of its own, until it stops it. */
async function hold(k: number) {
  const request_id = `hold-${k}`;
  const { leases } = await bus.call(
    LeaseAcquire,
    { request_id, holder: "faults-test", tenant: "t", model: MODEL, wait_ms: 10_000, ttl_ms: 600_000 },
    { timeoutMs: 15_000 },
  );
  const lease = leases[0] as Lease;
  const call = bus.callStream(
    WorkerGenerate,
    {
      request_id,
      model: MODEL,
      prompt: "Once upon a time",
      // Past EOS up to the slot's room: far longer than the test needs it to run.
      sampling: { temperature: 0, top_p: 1, presence_penalty: 0, frequency_penalty: 0, stop: [], ignore_eos: true },
      lease: { lease_id: lease.lease_id, fencing_token: lease.fencing_token, slot: lease.slot },
    },
    { params: { workerId: lease.worker_id }, startTimeoutMs: 30_000, idleTimeoutMs: 60_000 },
  );
  const reader = call[Symbol.asyncIterator]();
  await reader.next(); // running: its first chunk arrived
  const ended = (async () => {
    try {
      while (!(await reader.next()).done);
      return { at: Date.now(), error: null };
    } catch (err) {
      return { at: Date.now(), error: err as { code?: string; message?: string } };
    }
  })();
  return { request: request_id, lease, call, ended };
}

/** Problems on one slot's timeline: an interval admitted before the previous ended, or a token not above it. */
function doubleLeases(all: Interval[]): string[] {
  const bySlot = new Map<string, Interval[]>();
  for (const x of all) {
    const key = `${x.worker}/${x.slot}`;
    bySlot.set(key, [...(bySlot.get(key) ?? []), x]);
  }
  const problems: string[] = [];
  for (const [key, list] of bySlot) {
    list.sort((a, b) => a.start - b.start || a.token - b.token);
    for (let k = 1; k < list.length; k++) {
      const a = list[k - 1] as Interval;
      const b = list[k] as Interval;
      if (b.start < a.end) problems.push(`${key}: token ${b.token} admitted at ${b.start} while token ${a.token} held it until ${a.end}`);
      // A token is granted once: the same token again is the same lease, a slot credit used for
      // its holder's next request (disjoint from the last, checked above). A lower one never.
      if (b.token < a.token) problems.push(`${key}: token ${b.token} admitted after token ${a.token}`);
    }
  }
  return problems;
}

beforeAll(async () => {
  // Room in each slot for a generation that runs until the test stops it.
  stack = await startStack({ services: ["worker", "api"], workers: 2, env: { ATLAS_CTX_SIZE: "16384" } });
  // The test's own connection (the unrestricted `test` user) records every worker's sequences.
  bus = await Bus.connect({
    servers: stack.nats.url,
    prefix: stack.config.ATLAS_NATS_PREFIX,
    service: { name: "faults-test", version: "0.0.0" },
    discoverable: false,
  });
  bus.subscribe(
    MetricEvents,
    (batch) => {
      for (const e of batch) {
        if (e.type !== "generation" || e.slot == null || e.fencing_token == null || e.started_at === undefined) continue;
        const x = { request: e.request_id, worker: e.worker_id, slot: e.slot, token: e.fencing_token };
        intervals.push({ ...x, start: e.started_at, end: e.ts, status: e.status });
      }
    },
    { params: { service: ServiceName.worker } },
  );
  await bus.nc.flush();
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
  // The standby follows the heartbeats and waits for the claim; the leader is still the first one.
  expect((await poolState()).leader).toBe(leaderId);
}, 90_000);
afterAll(async () => {
  await bus?.close();
  await stack?.close();
});

describe("the leader scheduler SIGKILLed under load", () => {
  it("keeps answering every request, the standby takes over, and no slot is leased twice", async () => {
    const before = await poolState();
    const results: { i: number; status: number; body: Reply }[] = [];
    const sentAt = new Map<number, number>();
    let transportRetries = 0;
    // As OpenAI's SDK does, a request whose connection broke before any answer is sent again.
    const send = (i: number) => {
      sentAt.set(i, Date.now());
      return chat(i)
        .catch(() => {
          transportRetries += 1;
          return chat(i);
        })
        .then((r) => ({ i, ...r }));
    };
    // One slot of each worker held by the old leader's leases, through the failover.
    const held = [await hold(0), await hold(1)];
    expect(new Set(held.map((h) => h.lease.worker_id)).size).toBe(2);
    let stop = false;
    const load = (async () => {
      let i = 0;
      while (!stop) results.push(...(await Promise.all(Array.from({ length: 4 }, () => send(i++)))));
    })();
    // Leases were granted and run before the kill.
    await expect.poll(() => intervals.length, { timeout: 20_000 }).toBeGreaterThan(12);
    // The held leases are in KV (written behind, once a lease is a second old): what a new leader
    // restores. (One it could not restore would stay out of its pool while busy: pool_reconcile.test.ts.)
    const state = await bus.jetstream.openKv(schedulerBuckets(stack.config.ATLAS_NATS_PREFIX).state);
    for (const h of held) {
      await expect
        .poll(async () => (await state.get(leaseKey(h.lease.worker_id, h.lease.slot)))?.json<Lease>().lease_id, { timeout: 10_000 })
        .toBe(h.lease.lease_id);
    }

    const killAt = Date.now();
    leader.kill("SIGKILL");
    await leader.exited;
    // From here on no lease can come from the old leader: its process is gone.
    const exitedAt = Date.now();

    await expect
      .poll(async () => (await poolState().catch(() => ({ leader: before.leader }))).leader, { timeout: 30_000, interval: 250 })
      .not.toBe(before.leader);
    await expect.poll(async () => (await poolState()).workers.filter((w) => w.alive).length, { timeout: 10_000 }).toBe(2);
    // Load keeps going under the new leader, with leases again (not degraded).
    const afterKill = () => results.filter((r) => (sentAt.get(r.i) ?? 0) > exitedAt);
    await expect
      .poll(() => afterKill().filter((r) => (r.body.atlas?.slots[0]?.fencing_token ?? null) !== null).length, { timeout: 30_000 })
      .toBeGreaterThan(8);
    stop = true;
    await load;

    // The held generations run on, and the new leader knows their leases (restored from the old one's).
    const pool = await poolState();
    for (const h of held) {
      const slot = pool.workers.find((w) => w.worker_id === h.lease.worker_id)?.slots[h.lease.slot];
      expect.soft(slot?.lease_id, `the new leader's lease on ${h.lease.worker_id}/${h.lease.slot}`).toBe(h.lease.lease_id);
    }
    // The test stops them now and gives their leases back (the new leader may already have ended
    // them on a heartbeat that shows the slot idle: either way they are over).
    const stoppedAt = Date.now();
    for (const h of held) h.call.cancel("the test is done holding the slot");
    for (const h of held) {
      const end = await h.ended;
      // Ended by the test's cancel (or, should it ever get that far, at the end of the slot's room).
      const byTest = end.error === null || (end.error.code === "cancelled" && end.at >= stoppedAt);
      expect.soft(byTest, `${h.request} ended before the test stopped it: ${end.error?.message}`).toBe(true);
      await bus.call(LeaseRelease, { lease_id: h.lease.lease_id, fencing_token: h.lease.fencing_token }, { timeoutMs: 5000 });
    }

    expect(results.filter((r) => r.status !== 200).map((r) => r.body)).toEqual([]);
    expect(transportRetries).toBeLessThanOrEqual(2);

    // The workers' events of the held generations (they end once the cancel reached them).
    await expect.poll(() => intervals.filter((x) => x.request.startsWith("hold-")).length, { timeout: 10_000 }).toBe(2);
    // Every lease a response reports ran where it says (the worker's event has arrived too).
    const reported = results.flatMap((r) =>
      (r.body.atlas?.slots ?? []).filter((s) => s.fencing_token !== null).map((s) => `${s.worker}/${s.slot}#${s.fencing_token}`),
    );
    const seen = () => new Set(intervals.map((x) => `${x.worker}/${x.slot}#${x.token}`));
    await expect.poll(() => reported.filter((k) => !seen().has(k)), { timeout: 10_000 }).toEqual([]);

    // No slot leased twice, across the takeover.
    expect(doubleLeases(intervals)).toEqual([]);
    const stoppedByTest = (x: Interval) => x.request.startsWith("hold-") && x.end >= stoppedAt;
    expect(intervals.filter((x) => x.status !== "ok" && !stoppedByTest(x))).toEqual([]);

    // The new leader's tokens are above everything admitted before the kill.
    const maxBefore = Math.max(...intervals.filter((x) => x.start < killAt).map((x) => x.token));
    expect(maxBefore).toBeGreaterThan(0);
    const newLeader = new Set(afterKill().map((r) => `load-${r.i}/0`));
    const granted = intervals.filter((x) => newLeader.has(x.request)).map((x) => x.token);
    expect(granted.length).toBeGreaterThan(8);
    expect(granted.filter((t) => t <= maxBefore)).toEqual([]);

    // Every lease was given back: nothing is left on any slot. A lease the old leader granted
    // whose answer died with it is reclaimed when its TTL (30 s) runs out.
    await expect.poll(async () => (await poolState()).leases, { timeout: 45_000, interval: 500 }).toBe(0);
    expect(standby.child.exitCode).toBeNull();
  }, 150_000);
});
