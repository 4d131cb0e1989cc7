/**
 * Property test of the pool's state machine: under random sequences of heartbeats, acquire,
 * renew, release, time passing, worker death and leader failover, no slot ever has two live
 * leases, no worker ever runs two generations on one slot, and fencing tokens never go back.
 */
import type { Heartbeat } from "@atlas/contracts";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type LeaseRecord, Pool } from "./pool.ts";

const WORKERS = ["w1", "w2", "w3"];
const SLOTS = 2;
const BLOCK = 8; // fencing tokens reserved per persisted block

/** A worker as llama.cpp would run it: it accepts a lease's generation only with a fresh token. */
class FakeWorker {
  readonly fencing = Array.from({ length: SLOTS }, () => 0);
  readonly running: (LeaseRecord | null)[] = Array.from({ length: SLOTS }, () => null);
  readonly session: (string | null)[] = Array.from({ length: SLOTS }, () => null);
  alive = true;
  constructor(readonly id: string) {}

  /** The lease holder starts generating; the worker refuses an older token. */
  start(lease: LeaseRecord): boolean {
    if (lease.fencing_token < (this.fencing[lease.slot] ?? 0)) return false;
    // A newer token takes the slot over: whatever ran there under an older one is aborted.
    this.fencing[lease.slot] = lease.fencing_token;
    this.running[lease.slot] = lease;
    this.session[lease.slot] = lease.session;
    return true;
  }
  finish(lease: LeaseRecord): void {
    if (this.running[lease.slot]?.lease_id === lease.lease_id) this.running[lease.slot] = null;
  }
  abort(slot: number, token: number): void {
    const r = this.running[slot];
    if (r !== null && r !== undefined && r.fencing_token <= token) this.running[slot] = null;
  }
  heartbeat(now: number): Heartbeat {
    return {
      worker_id: this.id,
      model: "m",
      fingerprint: "f",
      ctx_size: 1024,
      slots: this.fencing.map((f, slot) => ({
        slot,
        busy: this.running[slot] !== null,
        tokens: this.session[slot] === null ? 0 : 10,
        session: this.session[slot] ?? null,
        fencing_token: f,
      })),
      l2: [],
      draining: false,
      interval_ms: 1000,
      sent_at: now,
    };
  }
}

type Cmd =
  | { t: "hb"; w: number }
  | { t: "acquire"; session: number | null; count: number }
  | { t: "start"; i: number }
  | { t: "finish"; i: number }
  | { t: "renew"; i: number }
  | { t: "advance"; ms: number }
  | { t: "kill"; w: number }
  | { t: "revive"; w: number }
  | { t: "failover" };

const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ t: fc.constant("hb" as const), w: fc.nat(WORKERS.length - 1) }),
  fc.record({ t: fc.constant("acquire" as const), session: fc.option(fc.nat(4), { nil: null }), count: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ t: fc.constant("start" as const), i: fc.nat(20) }),
  fc.record({ t: fc.constant("finish" as const), i: fc.nat(20) }),
  fc.record({ t: fc.constant("renew" as const), i: fc.nat(20) }),
  fc.record({ t: fc.constant("advance" as const), ms: fc.integer({ min: 1, max: 5000 }) }),
  fc.record({ t: fc.constant("kill" as const), w: fc.nat(WORKERS.length - 1) }),
  fc.record({ t: fc.constant("revive" as const), w: fc.nat(WORKERS.length - 1) }),
  fc.constant({ t: "failover" as const }),
);

function run(cmds: Cmd[]): void {
  let now = 0;
  let reserved = 0; // persisted end of the reserved fencing block
  const persisted = new Map<string, LeaseRecord>(); // the KV mirror of live leases
  const workers = WORKERS.map((id) => new FakeWorker(id));
  const held: LeaseRecord[] = []; // leases the clients hold (they do not know about failovers)
  let lastToken = 0;
  const newPool = () => new Pool({ heartbeatTimeoutMs: 3000, fencingStart: reserved });
  let pool = newPool();

  const apply = (actions: ReturnType<Pool["tick"]>) => {
    for (const a of actions) {
      if (a.type === "abort") workers.find((w) => w.id === a.worker)?.abort(a.slot, a.fencing_token);
      if (a.type === "lease-removed") persisted.delete(a.lease_id);
    }
  };

  for (const c of cmds) {
    switch (c.t) {
      case "hb": {
        const w = workers[c.w];
        if (w?.alive) pool.heartbeat(w.heartbeat(now), now);
        break;
      }
      case "acquire": {
        // The leader reserves a new block before it could run past the persisted one.
        if (pool.fencingToken + c.count > reserved) reserved = Math.ceil((pool.fencingToken + c.count + 1) / BLOCK) * BLOCK;
        const r = pool.acquire(
          {
            request_id: "r",
            holder: "api",
            model: "m",
            session: c.session === null ? null : `t/s${c.session}`,
            count: c.count,
            strategy: "lru",
            ttl_ms: 3000,
          },
          now,
        );
        if (r.ok) {
          expect(r.leases).toHaveLength(c.count);
          for (const l of r.leases) {
            expect(l.fencing_token).toBeGreaterThan(lastToken);
            lastToken = l.fencing_token;
            persisted.set(l.lease_id, { ...l });
            held.push(l);
          }
        }
        break;
      }
      case "start": {
        const l = held[c.i % Math.max(1, held.length)];
        if (l !== undefined) workers.find((w) => w.id === l.worker_id)?.start(l);
        break;
      }
      case "finish": {
        const i = c.i % Math.max(1, held.length);
        const l = held[i];
        if (l === undefined) break;
        workers.find((w) => w.id === l.worker_id)?.finish(l);
        if (pool.release(l.lease_id, l.fencing_token, 10)) persisted.delete(l.lease_id);
        held.splice(i, 1);
        break;
      }
      case "renew": {
        const l = held[c.i % Math.max(1, held.length)];
        if (l !== undefined && pool.renew(l.lease_id, l.fencing_token, 3000, now) !== undefined) {
          const p = persisted.get(l.lease_id);
          if (p !== undefined) p.expires_at = now + 3000;
        }
        break;
      }
      case "advance":
        now += c.ms;
        apply(pool.tick(now));
        break;
      case "kill": {
        const w = workers[c.w];
        if (w !== undefined) w.alive = false;
        break;
      }
      case "revive": {
        const w = workers[c.w];
        if (w !== undefined) w.alive = true;
        break;
      }
      case "failover": {
        // A standby takes over: fencing from the persisted block, leases from KV, then heartbeats.
        pool = newPool();
        for (const w of workers) if (w.alive) pool.heartbeat(w.heartbeat(now), now);
        for (const l of persisted.values()) pool.restoreLease({ ...l }, now);
        expect(pool.fencingToken).toBeGreaterThanOrEqual(lastToken);
        break;
      }
    }
    // Invariant 1: at most one live lease per slot in the leader's view.
    const perSlot = new Map<string, number>();
    for (const l of pool.leases.values()) {
      if (l.expires_at <= now) continue;
      const k = `${l.worker_id}/${l.slot}`;
      perSlot.set(k, (perSlot.get(k) ?? 0) + 1);
    }
    for (const [slot, n] of perSlot) expect(n, `slot ${slot}`).toBeLessThanOrEqual(1);
    // Invariant 2: a worker never runs two generations on one slot, and what runs there holds
    // the slot's newest accepted token (an older holder was fenced off).
    for (const w of workers) {
      for (let s = 0; s < SLOTS; s++) {
        const r = w.running[s];
        if (r !== null && r !== undefined) expect(r.fencing_token).toBe(w.fencing[s]);
      }
    }
  }
}

describe("Pool", () => {
  it("keeps one live lease per slot and growing fencing tokens under any interleaving", () => {
    fc.assert(
      fc.property(fc.array(cmd, { minLength: 1, maxLength: 120 }), (cmds) => {
        run([{ t: "hb", w: 0 }, { t: "hb", w: 1 }, { t: "hb", w: 2 }, ...cmds]);
      }),
      { numRuns: 400 },
    );
  });

  it("gives a session its own slot back (L1) and queues it while that slot is busy", () => {
    const pool = new Pool();
    const w = new FakeWorker("w1");
    pool.heartbeat(w.heartbeat(0), 0);
    const req = { request_id: "r", holder: "api", model: "m", session: "t/a", count: 1, strategy: "lru" as const, ttl_ms: 1000 };
    const first = pool.acquire(req, 0);
    if (!first.ok) throw new Error("no lease");
    expect(first.leases[0]?.residency).toBe("cold");
    expect(pool.acquire(req, 1)).toEqual({ ok: false, reason: "busy" });
    pool.release(first.leases[0]?.lease_id ?? "", first.leases[0]?.fencing_token ?? 0, 42);
    const second = pool.acquire(req, 2);
    if (!second.ok) throw new Error("no lease");
    expect(second.leases[0]).toMatchObject({ residency: "l1", cached_tokens: 42, slot: first.leases[0]?.slot });
  });

  it("evicts an idle session by strategy when every slot holds one", () => {
    const pool = new Pool();
    pool.heartbeat(new FakeWorker("w1").heartbeat(0), 0);
    const take = (session: string, now: number) => {
      const r = pool.acquire({ request_id: "r", holder: "api", model: "m", session, count: 1, strategy: "lru", ttl_ms: 1000 }, now);
      if (!r.ok) throw new Error(`no lease for ${session}`);
      const l = r.leases[0];
      if (l === undefined) throw new Error("no lease");
      pool.release(l.lease_id, l.fencing_token, 5);
      return r;
    };
    take("t/a", 0);
    take("t/b", 1);
    take("t/a", 2); // a is now more recent than b
    const r = take("t/c", 3);
    expect(r.ok && r.evicted.map((e) => e.session)).toEqual(["t/b"]);
  });

  it("declares a silent worker dead after the timeout and revokes its leases", () => {
    const pool = new Pool({ heartbeatTimeoutMs: 3000 });
    pool.heartbeat(new FakeWorker("w1").heartbeat(0), 0);
    const r = pool.acquire({ request_id: "r", holder: "api", model: "m", session: null, count: 1, strategy: "lru", ttl_ms: 60_000 }, 0);
    expect(r.ok).toBe(true);
    expect(pool.tick(2999)).toEqual([]);
    const actions = pool.tick(3001);
    expect(actions.map((a) => a.type)).toEqual(["lease-removed", "worker-dead"]);
    expect(pool.leases.size).toBe(0);
    expect(pool.acquire({ request_id: "r", holder: "api", model: "m", session: null, count: 1, strategy: "lru", ttl_ms: 1 }, 3002)).toEqual(
      {
        ok: false,
        reason: "no_worker",
      },
    );
  });
});
