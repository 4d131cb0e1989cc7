/**
 * The pool with one-way releases and write-behind lease records: the workers' heartbeats are
 * the source of truth for what ran, so
 * - a release that is lost or late can never free a slot that a newer lease holds;
 * - a lease the leader never wrote to KV (lost when it died) is seen in the heartbeats: its slot
 *   stays out of the pool until the worker reports it idle;
 * - a lease restored from KV although it had ended is released by the first heartbeat that
 *   shows its slot idle at or past its token;
 * - a heartbeat that shows a lease running extends it, so no renewal message is needed;
 * - a slot credit (a lease the worker keeps for its holder) is alive while the worker reports
 *   the slot held at its token, ends when it reports the slot idle and not held, keeps a slot
 *   out of the pool when its token is unknown (after a failover), and is asked back once when
 *   someone waits.
 */
import type { Heartbeat } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { type AcquireRequest, Pool } from "./pool.ts";

const TTL = 30_000;

function ask(session: string | null = null, id = "r"): AcquireRequest {
  return { request_id: id, holder: "api", model: "m", session, count: 1, strategy: "lru", ttl_ms: TTL };
}

const beatSlot = { slot: 0, busy: false, tokens: 0, session: null, fencing_token: 0 };

/** A one-slot worker's heartbeat. */
function beat(slot: { busy: boolean; token: number; session?: string | null; tokens?: number; held?: boolean }, now: number): Heartbeat {
  return {
    worker_id: "w1",
    model: "m",
    fingerprint: "f",
    ctx_size: 1024,
    slots: [
      {
        slot: 0,
        busy: slot.busy,
        tokens: slot.tokens ?? 0,
        session: slot.session ?? null,
        fencing_token: slot.token,
        held: slot.held ?? false,
      },
    ],
    l2: [],
    draining: false,
    interval_ms: 1000,
    sent_at: now,
  };
}

function granted(pool: Pool, req: AcquireRequest, now: number) {
  const r = pool.acquire(req, now);
  if (!r.ok) throw new Error(`expected a grant, got ${r.reason}`);
  return r.leases[0] as NonNullable<(typeof r.leases)[0]>;
}

describe("releases that are lost or late", () => {
  it("a late release of an older lease does not free the slot a newer lease holds", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const first = granted(pool, ask(null, "a"), 0);
    // The worker ran it and reports the slot idle at its token: the lease ends without a release.
    expect(pool.heartbeat(beat({ busy: false, token: first.fencing_token }, 10), 10)).toEqual([
      { type: "lease-removed", lease_id: first.lease_id },
    ]);
    const second = granted(pool, ask(null, "b"), 20);
    expect(second.slot).toBe(first.slot);
    // The first lease's release arrives now, late: nothing happens.
    expect(pool.release(first.lease_id, first.fencing_token, 0)).toBe(false);
    expect(pool.leases.has(second.lease_id)).toBe(true);
    expect(pool.acquire(ask(null, "c"), 30)).toEqual({ ok: false, reason: "busy" });
  });

  it("a heartbeat older than the newest grant, showing the slot idle at an older token, frees nothing", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const first = granted(pool, ask(null, "a"), 0);
    pool.release(first.lease_id, first.fencing_token, 0);
    const second = granted(pool, ask(null, "b"), 20);
    // Sent before the worker admitted the second lease: idle at the first one's token.
    expect(pool.heartbeat(beat({ busy: false, token: first.fencing_token }, 25), 25)).toEqual([]);
    expect(pool.leases.has(second.lease_id)).toBe(true);
    expect(pool.acquire(ask(null, "c"), 30)).toEqual({ ok: false, reason: "busy" });
  });

  it("a release with the right lease id but another token is refused", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const lease = granted(pool, ask(), 0);
    expect(pool.release(lease.lease_id, lease.fencing_token + 1, 0)).toBe(false);
    expect(pool.leases.has(lease.lease_id)).toBe(true);
  });
});

describe("lease records lost or stale after a failover", () => {
  it("a lease the new leader never read from KV keeps its slot out of the pool until the worker reports it idle", () => {
    // The old leader granted token 7 and died before writing the record; the new one starts at 1000.
    const pool = new Pool({ fencingStart: 1000 });
    pool.heartbeat(beat({ busy: true, token: 7 }, 0), 0);
    expect(pool.acquire(ask(), 0)).toEqual({ ok: false, reason: "busy" });
    pool.heartbeat(beat({ busy: true, token: 7 }, 1000), 1000);
    expect(pool.acquire(ask(), 1000)).toEqual({ ok: false, reason: "busy" });
    pool.heartbeat(beat({ busy: false, token: 7 }, 2000), 2000);
    const lease = granted(pool, ask(), 2000);
    expect(lease.fencing_token).toBe(1001);
  });

  it("a lease restored from KV although it had ended is released by a heartbeat that shows its slot idle", () => {
    const pool = new Pool({ fencingStart: 1000 });
    pool.heartbeat(beat({ busy: false, token: 7, session: "t/s1", tokens: 40 }, 0), 0);
    pool.restoreLease(
      {
        lease_id: "old",
        fencing_token: 7,
        worker_id: "w1",
        slot: 0,
        session: "t/s1",
        holder: "api",
        granted_at: 0,
        expires_at: TTL,
        residency: "cold",
        cached_tokens: 0,
      },
      0,
    );
    expect(pool.acquire(ask(), 10)).toEqual({ ok: false, reason: "busy" });
    expect(pool.heartbeat(beat({ busy: false, token: 7, session: "t/s1", tokens: 40 }, 1000), 1000)).toEqual([
      { type: "lease-removed", lease_id: "old" },
    ]);
    // The slot kept the session's tokens: its next turn lands there (L1).
    const next = granted(pool, ask("t/s1"), 1010);
    expect(next).toMatchObject({ residency: "l1", cached_tokens: 40 });
  });

  it("a restored lease still running keeps its slot until it ends", () => {
    const pool = new Pool({ fencingStart: 1000 });
    pool.heartbeat(beat({ busy: true, token: 7 }, 0), 0);
    pool.restoreLease(
      {
        lease_id: "running",
        fencing_token: 7,
        worker_id: "w1",
        slot: 0,
        session: null,
        holder: "api",
        granted_at: 0,
        expires_at: TTL,
        residency: "cold",
        cached_tokens: 0,
      },
      0,
    );
    expect(pool.heartbeat(beat({ busy: true, token: 7 }, 1000), 1000)).toEqual([]);
    expect(pool.acquire(ask(), 1000)).toEqual({ ok: false, reason: "busy" });
  });
});

describe("renewal by heartbeat", () => {
  it("a lease whose generation runs past its TTL is extended by the heartbeats, and expires once they stop showing it", () => {
    const pool = new Pool({ heartbeatTimeoutMs: 3 * TTL });
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const lease = granted(pool, ask(), 0);
    for (let t = 1000; t <= 2 * TTL; t += 1000) {
      pool.heartbeat(beat({ busy: true, token: lease.fencing_token }, t), t);
      expect(pool.tick(t)).toEqual([]);
    }
    expect(pool.leases.get(lease.lease_id)?.expires_at).toBe(3 * TTL);
    // Heartbeats that show another token (a takeover) do not extend it.
    pool.heartbeat(beat({ busy: true, token: lease.fencing_token + 5 }, 3 * TTL - 1), 3 * TTL - 1);
    expect(pool.tick(3 * TTL).map((a) => a.type)).toEqual(["abort", "lease-removed"]);
  });
});

describe("slot credits", () => {
  const credit = (id: string): AcquireRequest => ({ ...ask(null, id), credit: true });

  it("a credit is granted for one slot, with or without a session", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    expect(granted(pool, { ...credit("a"), session: "t/s" }, 0).credit).toBe(true);
    const other = new Pool();
    other.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    expect(granted(other, credit("b"), 0).credit).toBe(true);
    const two = new Pool();
    two.heartbeat({ ...beat({ busy: false, token: 0 }, 0), slots: [0, 1].map((slot) => ({ ...beatSlot, slot })) }, 0);
    const r = two.acquire({ ...credit("c"), count: 2 }, 0);
    expect(r.ok && r.leases.map((l) => l.credit)).toEqual([undefined, undefined]);
  });

  it("learns the session a credit's holder ran on its slot from the held heartbeat, and from the release", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const lease = granted(pool, credit("a"), 0);
    const home = () => pool.snapshot(1)[0]?.slots[0]?.session;
    expect(home()).toBeNull();
    // The holder ran session t/x under its credit: the idle, held report says so.
    pool.heartbeat(beat({ busy: false, held: true, token: lease.fencing_token, session: "t/x", tokens: 40 }, 1), 1);
    expect(home()).toBe("t/x");
    // Then t/y; the release (given back idle) says the slot holds t/y.
    expect(pool.release(lease.lease_id, lease.fencing_token, 30, "t/y")).toBe(true);
    expect(home()).toBe("t/y");
    // t/y's next turn finds its home (L1), t/x's does not.
    expect(granted(pool, ask("t/y", "b"), 2)).toMatchObject({ residency: "l1", cached_tokens: 30, slot: 0 });
  });

  it("lives while the slot is reported held at its token, and ends when it is reported idle and not held", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const lease = granted(pool, credit("a"), 0);
    // Idle between its holder's requests, but held: alive, and extended like a running lease.
    expect(pool.heartbeat(beat({ busy: false, held: true, token: lease.fencing_token }, 20_000), 20_000)).toEqual([]);
    expect(pool.leases.get(lease.lease_id)?.expires_at).toBe(20_000 + TTL);
    // Past its first TTL it is still alive (the held reports extended it), and holds its slot.
    pool.heartbeat(beat({ busy: false, held: true, token: lease.fencing_token }, TTL + 1), TTL + 1);
    expect(pool.tick(TTL + 1)).toEqual([]);
    expect(pool.acquire(ask(null, "b"), TTL + 1)).toEqual({ ok: false, reason: "busy" });
    // Given back by the worker (its release lost): the first idle, unheld report ends it.
    expect(pool.heartbeat(beat({ busy: false, held: false, token: lease.fencing_token }, TTL + 2), TTL + 2)).toEqual([
      { type: "lease-removed", lease_id: lease.lease_id },
    ]);
    expect(granted(pool, ask(null, "c"), TTL + 3).fencing_token).toBeGreaterThan(lease.fencing_token);
  });

  it("a credit the pool does not know (a new leader, its record lost) keeps its slot out of the pool while held", () => {
    const pool = new Pool({ fencingStart: 100 });
    pool.heartbeat(beat({ busy: false, held: true, token: 50 }, 0), 0);
    // Held under a token this pool never granted: out of the pool until the worker lets it go.
    expect(pool.acquire(ask(null, "a"), 1)).toEqual({ ok: false, reason: "busy" });
    pool.heartbeat(beat({ busy: false, held: false, token: 50 }, 2), 2);
    expect(granted(pool, ask(null, "b"), 3).fencing_token).toBe(101);
  });

  it("someone waiting asks each credit of the model back once", () => {
    const pool = new Pool();
    pool.heartbeat(beat({ busy: false, token: 0 }, 0), 0);
    const lease = granted(pool, credit("a"), 0);
    const revoke = { type: "revoke", worker: "w1", slot: 0, fencing_token: lease.fencing_token };
    expect(pool.revokeCredits("other-model")).toEqual([]);
    expect(pool.revokeCredits("m")).toEqual([revoke]);
    expect(pool.revokeCredits("m")).toEqual([]);
    // The worker gives it back: the release frees the slot as any release does.
    expect(pool.release(lease.lease_id, lease.fencing_token, 0)).toBe(true);
    expect(granted(pool, ask(null, "b"), 1).slot).toBe(0);
  });
});
