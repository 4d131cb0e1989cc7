/**
 * Fencing on the worker's side, against a real worker (real nats-server, the generated tiny
 * model, one slot). The test speaks `WorkerGenerate` straight to the worker from its own NATS
 * connection (the unrestricted `test` user), with leases it makes up or takes from the schedulers.
 *
 * What must hold:
 * - a request whose fencing token is older than the newest its slot has seen is refused
 *   (`conflict`, the message naming both tokens), sends nothing, and leaves the slot's token as it was;
 * - a newer token takes the slot over: a generation still running there under an older token
 *   ends `cancelled` (its metric event shows it ended after the newer one was admitted), the
 *   newer one completes, and the older holder cannot come back;
 * - across a scheduler failover (schedulers are child processes, the leader is SIGKILLed): a
 *   lease granted by the dead leader that reaches the worker after the new leader has granted
 *   the same slot again is refused, and the new lease's generation runs to its end undisturbed.
 *
 * No fixed sleeps: every step waits on a chunk, a reply, a heartbeat or a metric event (the wait
 * for a heartbeat while a credit is held ends before the credit's idle time could, see there).
 */
import { Bus, type NatsBus } from "@atlas/bus";
import {
  CREDIT_IDLE_MS,
  type GenerateEnd,
  type GenerateRequest,
  type GenerationEvent,
  type Heartbeat,
  type Lease,
  LeaseAcquire,
  LeaseRelease,
  LeaseReleased,
  MetricEvents,
  SchedulerState,
  ServiceName,
  type SlotReport,
  WorkerControl,
  WorkerGenerate,
  WorkerHeartbeat,
} from "@atlas/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const WORKER = "worker-1";
/** One slot with room for a generation that runs for seconds (ignore_eos) unless stopped. */
const ENV = { ATLAS_SLOTS: "1", ATLAS_CTX_SIZE: "16384" };
/** Tokens of a generation meant to be still running when the next request arrives (cut short). */
const LONG = 16_000;
/** Tokens of one that must still run when a request arrives one round trip later, then finish. */
const MEDIUM = 2000;

type LeaseRef = { lease_id: string; fencing_token: number; slot: number };

/** The test's own connection: the unrestricted `test` user, so it can speak every contract. */
function connect(stack: Stack): Promise<NatsBus> {
  return Bus.connect({
    servers: stack.nats.url,
    prefix: stack.config.ATLAS_NATS_PREFIX,
    service: { name: "fencing-test", version: "0.0.0" },
    discoverable: false,
  });
}

function request(id: string, lease: LeaseRef, maxTokens: number): GenerateRequest {
  return {
    request_id: id,
    model: MODEL,
    prompt: "Once upon a time",
    sampling: { temperature: 0, top_p: 1, presence_penalty: 0, frequency_penalty: 0, stop: [], max_tokens: maxTokens, ignore_eos: true },
    lease: { lease_id: lease.lease_id, fencing_token: lease.fencing_token, slot: lease.slot },
  };
}

/** A made-up lease on slot 0 (the worker checks only the slot and the token). */
const lease = (token: number): LeaseRef => ({ lease_id: `made-up-${token}`, fencing_token: token, slot: 0 });

interface Running {
  /** Settles with the first chunk; rejects if the generation ended before it sent one. */
  firstChunk: Promise<void>;
  result: Promise<GenerateEnd>;
  chunks(): number;
}

/** Starts a generation on a worker and keeps reading its chunks (stopping would cancel it). */
function generate(bus: NatsBus, workerId: string, req: GenerateRequest): Running {
  const call = bus.callStream(WorkerGenerate, req, { params: { workerId }, startTimeoutMs: 30_000, idleTimeoutMs: 60_000 });
  let n = 0;
  let gotFirst!: () => void;
  const first = new Promise<void>((r) => {
    gotFirst = r;
  });
  void (async () => {
    try {
      for await (const _ of call) if (++n === 1) gotFirst();
    } catch {
      // `result` rejects with the same error
    }
  })();
  const endedFirst = call.result.then(() => {
    throw new Error(`${req.request_id} ended before its first chunk`);
  });
  const firstChunk = Promise.race([first, endedFirst]);
  firstChunk.catch(() => {});
  return { firstChunk, result: call.result, chunks: () => n };
}

/** Collects the workers' `generation` metric events. */
async function recordGenerations(bus: NatsBus): Promise<GenerationEvent[]> {
  const seen: GenerationEvent[] = [];
  bus.subscribe(
    MetricEvents,
    (batch) => {
      for (const e of batch) if (e.type === "generation") seen.push(e);
    },
    { params: { service: ServiceName.worker } },
  );
  await bus.nc.flush();
  return seen;
}

/** The generation event of one request, once the worker published it. */
async function eventOf(seen: GenerationEvent[], requestId: string): Promise<GenerationEvent> {
  await expect.poll(() => seen.find((e) => e.request_id === requestId), { timeout: 10_000 }).toBeDefined();
  return seen.find((e) => e.request_id === requestId) as GenerationEvent;
}

/**
 * The first heartbeat the worker sends after `since` (same clock: the worker runs in this
 * process); undefined when none has arrived by `until`.
 */
function heartbeatAfter(bus: NatsBus, since: number, until = Number.POSITIVE_INFINITY): Promise<Heartbeat | undefined> {
  return new Promise((resolve) => {
    const timer = Number.isFinite(until) ? setTimeout(() => done(undefined), Math.max(0, until - Date.now())) : undefined;
    const done = (hb: Heartbeat | undefined) => {
      clearTimeout(timer);
      sub.unsubscribe();
      resolve(hb);
    };
    const sub = bus.subscribe(WorkerHeartbeat, (hb) => (hb.sent_at > since ? done(hb) : undefined), { params: { workerId: WORKER } });
  });
}

/** Slot 0 as the first heartbeat sent after `since` reports it. */
async function slotAfter(bus: NatsBus, since: number): Promise<SlotReport | undefined> {
  return (await heartbeatAfter(bus, since))?.slots[0];
}

/** The slot's fencing token in the first heartbeat after `since`. */
async function slotTokenAfter(bus: NatsBus, since: number): Promise<number> {
  return (await slotAfter(bus, since))?.fencing_token ?? -1;
}

/** Every `LeaseReleased` the worker publishes from now on, by lease id. */
async function recordReleases(bus: NatsBus): Promise<string[]> {
  const ids: string[] = [];
  bus.subscribe(LeaseReleased, (e) => void ids.push(e.lease_id), {});
  await bus.nc.flush();
  return ids;
}

describe("a worker's slot under made-up leases", () => {
  let stack: Stack;
  let bus: NatsBus;
  let seen: GenerationEvent[];

  beforeAll(async () => {
    stack = await startStack({ services: ["worker"], env: ENV });
    bus = await connect(stack);
    seen = await recordGenerations(bus);
  });
  afterAll(async () => {
    await bus?.close();
    await stack?.close();
  });

  it("refuses a token older than the newest the slot has seen, naming both tokens", async () => {
    const ok = await generate(bus, WORKER, request("a-10", lease(10), 4)).result;
    expect(ok).toMatchObject({ slot: 0, finish_reason: "length" });

    const refusedAt = Date.now();
    const stale = generate(bus, WORKER, request("a-9", lease(9), 4));
    await expect(stale.result).rejects.toMatchObject({
      code: "conflict",
      message: expect.stringMatching(/fencing token 9 is older than 10\b/),
    });
    expect(stale.chunks()).toBe(0);
    // The refused token did not lower the slot's: the next heartbeat still reports 10.
    expect(await slotTokenAfter(bus, refusedAt)).toBe(10);
    // A lease that has ended (the worker released it) cannot come back either.
    await expect(generate(bus, WORKER, request("a-10-again", lease(10), 4)).result).rejects.toMatchObject({
      code: "conflict",
      message: expect.stringMatching(/fencing token 10 has ended/),
    });
  });

  it("lets a newer token take the slot over: the generation still running under the older one ends cancelled", async () => {
    const older = generate(bus, WORKER, request("b-20", lease(20), LONG));
    await older.firstChunk;
    const newer = generate(bus, WORKER, request("b-21", lease(21), 8));

    await expect(older.result).rejects.toMatchObject({ code: "cancelled" });
    await expect(newer.result).resolves.toMatchObject({ slot: 0, finish_reason: "length", usage: { completion_tokens: 8 } });

    // From the worker's side: the older ran on slot 0 under 20 until the newer (21) was admitted.
    const a = await eventOf(seen, "b-20");
    const b = await eventOf(seen, "b-21");
    expect(a).toMatchObject({ status: "cancelled", slot: 0, fencing_token: 20 });
    expect(b).toMatchObject({ status: "ok", slot: 0, fencing_token: 21 });
    expect(b.started_at).toBeLessThanOrEqual(a.ts);
    // The holder that was taken over cannot come back with its token.
    await expect(generate(bus, WORKER, request("b-20-back", lease(20), 4)).result).rejects.toMatchObject({
      code: "conflict",
      message: expect.stringMatching(/fencing token 20 is older than 21\b/),
    });
  });
});

describe("a slot credit (a lease the worker keeps for its holder)", () => {
  let stack: Stack;
  let bus: NatsBus;
  let released: string[];
  const kept = (token: number): GenerateRequest["lease"] => ({ ...lease(token), keep: true });

  beforeAll(async () => {
    stack = await startStack({ services: ["worker"], env: ENV });
    bus = await connect(stack);
    released = await recordReleases(bus);
  });
  afterAll(async () => {
    await bus?.close();
    await stack?.close();
  });

  it("runs again under the same lease while kept, and is refused once revoked", async () => {
    const first = await generate(bus, WORKER, { ...request("c-30", lease(30), 4), lease: kept(30) }).result;
    expect(first.credit).toEqual({ lease_id: "made-up-30", fencing_token: 30, slot: 0 });
    // Kept, not released: the heartbeat reports the slot idle but held at the credit's token. The
    // heartbeat period and the credit's idle time are both 1 s, so a heartbeat is awaited only for
    // 0.6 of the idle time after a run began; if none comes, one more run under the credit (which
    // restarts its idle time) keeps it, and the wait begins again (0.6 s later in the heartbeats'
    // period: within three runs every phase of it has been waited for).
    for (let run = 0; ; run++) {
      const began = Date.now();
      const again = await generate(bus, WORKER, { ...request(`c-30-again-${run}`, lease(30), 4), lease: kept(30) }).result;
      expect(again.credit).toEqual(first.credit);
      const hb = await heartbeatAfter(bus, Date.now(), began + 0.6 * CREDIT_IDLE_MS);
      if (hb !== undefined) {
        expect(hb.slots[0]).toMatchObject({ busy: false, held: true, fencing_token: 30 });
        break;
      }
      expect(run, "a heartbeat while the credit is surely held").toBeLessThan(20);
    }
    expect(released).not.toContain("made-up-30");

    // Revoked while idle: given back at once, and never admitted again.
    bus.publish(WorkerControl, { type: "revoke", slot: 0, fencing_token: 30 }, { workerId: WORKER });
    await expect.poll(() => released.includes("made-up-30"), { timeout: 5000 }).toBe(true);
    await expect(generate(bus, WORKER, { ...request("c-30-back", lease(30), 4), lease: kept(30) }).result).rejects.toMatchObject({
      code: "conflict",
      message: expect.stringMatching(/fencing token 30 has ended/),
    });
    expect(await slotAfter(bus, Date.now())).toMatchObject({ busy: false, held: false, fencing_token: 30 });
  });

  it("revoked while it runs: the generation finishes undisturbed and its lease is released at the end, not kept", async () => {
    const running = generate(bus, WORKER, { ...request("c-31", lease(31), MEDIUM), lease: kept(31) });
    await running.firstChunk;
    bus.publish(WorkerControl, { type: "revoke", slot: 0, fencing_token: 31 }, { workerId: WORKER });
    await bus.nc.flush();
    const end = await running.result;
    expect(end).toMatchObject({ finish_reason: "length", usage: { completion_tokens: MEDIUM }, credit: null });
    await expect.poll(() => released.includes("made-up-31"), { timeout: 5000 }).toBe(true);
  });

  it("idle for the credit idle time: the worker gives it back by itself", async () => {
    const since = Date.now();
    const end = await generate(bus, WORKER, { ...request("c-32", lease(32), 4), lease: kept(32) }).result;
    expect(end.credit?.fencing_token).toBe(32);
    await expect.poll(() => released.includes("made-up-32"), { timeout: 10_000 }).toBe(true);
    // Given back by the idle timer, not earlier (a timer never fires before its time).
    expect(Date.now() - since).toBeGreaterThanOrEqual(CREDIT_IDLE_MS);
    await expect(generate(bus, WORKER, { ...request("c-32-back", lease(32), 4), lease: kept(32) }).result).rejects.toMatchObject({
      code: "conflict",
    });
  });
});

describe("a stale lease of a SIGKILLed leader", () => {
  let stack: Stack;
  let bus: NatsBus;

  beforeAll(async () => {
    stack = await startStack({ services: ["worker"], env: ENV });
    bus = await connect(stack);
  });
  afterAll(async () => {
    await bus?.close();
    await stack?.close();
  });

  const state = () => bus.call(SchedulerState, {}, { timeoutMs: 2000 });

  /** A lease on the one slot, asked of whoever leads; retried while a new leader is still warming up. */
  async function acquire(requestId: string, ttlMs: number): Promise<Lease> {
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await bus.call(
          LeaseAcquire,
          { request_id: requestId, holder: "fencing-test", tenant: "t", model: MODEL, wait_ms: 30_000, ttl_ms: ttlMs },
          { timeoutMs: 35_000 },
        );
        return r.leases[0] as Lease;
      } catch (err) {
        // `unavailable`: no leader yet, or it has not heard the worker's heartbeat yet.
        if (attempt >= 10 || (err as { code?: string }).code !== "unavailable") throw err;
        await waitFor(async () => (await state()).workers.some((w) => w.alive), {
          timeoutMs: 30_000,
          what: "a leader that sees the worker",
        });
      }
    }
  }

  it("is refused by the worker once the new leader granted the slot again, and the new lease's generation runs on", async () => {
    const first = await stack.spawn("scheduler");
    let oldLeader = "";
    await waitFor(
      async () => {
        const s = await state();
        oldLeader = s.leader;
        return s.workers.some((w) => w.alive);
      },
      { timeoutMs: 30_000, what: "the first scheduler to lead and see the worker" },
    );
    const standby = await stack.spawn("scheduler");

    // Granted by the old leader, and held: no generate is sent with it yet.
    const stale = await acquire("stale", 5000);
    first.kill("SIGKILL");
    await first.exited;
    await waitFor(async () => (await state()).leader !== oldLeader, { timeoutMs: 30_000, what: "the standby to lead" });

    // A stale lease the new leader restored from KV holds the slot until it expires; either way
    // the slot is granted again under a token above every one of the old leader's.
    const fresh = await acquire("fresh", 600_000);
    expect(fresh).toMatchObject({ worker_id: stale.worker_id, slot: stale.slot });
    expect(fresh.fencing_token).toBeGreaterThan(stale.fencing_token);

    const running = generate(bus, fresh.worker_id, request("fresh", fresh, MEDIUM));
    await running.firstChunk;
    // The old leader's lease reaches the worker now, while the new one's generation runs.
    const late = generate(bus, stale.worker_id, request("stale", stale, 4));
    await expect(late.result).rejects.toMatchObject({
      code: "conflict",
      message: expect.stringContaining(`fencing token ${stale.fencing_token} is older than ${fresh.fencing_token}`),
    });
    expect(late.chunks()).toBe(0);
    // Undisturbed: the new lease's generation runs to its full length.
    await expect(running.result).resolves.toMatchObject({
      slot: fresh.slot,
      finish_reason: "length",
      usage: { completion_tokens: MEDIUM },
    });

    // Given back (the leader may already have ended it on a heartbeat showing the slot idle).
    await bus.call(LeaseRelease, { lease_id: fresh.lease_id, fencing_token: fresh.fencing_token }, { timeoutMs: 5000 });
    expect(standby.child.exitCode).toBeNull();
  }, 180_000);
});
