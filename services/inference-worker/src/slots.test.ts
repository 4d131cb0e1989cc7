import { BusError } from "@atlas/bus";
import { describe, expect, it } from "vitest";
import { SlotPool } from "./slots.ts";

async function code(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BusError);
  return (err as BusError).code;
}

describe("SlotPool", () => {
  it("hands out free slots, least recently used first", async () => {
    const pool = new SlotPool(2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    expect([a.slot, b.slot]).toEqual([0, 1]);
    expect(pool.free).toBe(0);
    a.release();
    b.release();
    expect((await pool.acquire()).slot).toBe(0);
  });

  it("lets a chooser pick among free slots", async () => {
    const pool = new SlotPool(3);
    const lease = await pool.acquire({ choose: (free) => free.at(-1)! });
    expect(lease.slot).toBe(2);
  });

  it("queues in FIFO order and hands a released slot to the first waiter", async () => {
    const pool = new SlotPool(1);
    const held = await pool.acquire();
    const order: string[] = [];
    const first = pool.acquire().then((l) => {
      order.push("first");
      return l;
    });
    const second = pool.acquire().then((l) => {
      order.push("second");
      return l;
    });
    expect(pool.queued).toBe(2);
    held.release();
    held.release(); // idempotent
    const l1 = await first;
    expect(pool.queued).toBe(1);
    l1.release();
    (await second).release();
    expect(order).toEqual(["first", "second"]);
    expect(l1.waitedMs).toBeGreaterThanOrEqual(0);
    expect(pool.free).toBe(1);
  });

  it("refuses with overloaded beyond the queue bound", async () => {
    const pool = new SlotPool(1, { maxQueue: 1 });
    await pool.acquire();
    void pool.acquire();
    const err = await pool.acquire().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).code).toBe("overloaded");
    expect((err as BusError).retryAfterS).toBe(1);
  });

  it("takes an aborted waiter out of the queue", async () => {
    const pool = new SlotPool(1);
    const held = await pool.acquire();
    const abort = new AbortController();
    const waiting = pool.acquire({ signal: abort.signal });
    abort.abort();
    expect(await code(waiting)).toBe("cancelled");
    expect(pool.queued).toBe(0);
    held.release();
    expect(pool.free).toBe(1);
    expect(await code(pool.acquire({ signal: AbortSignal.abort() }))).toBe("cancelled");
  });

  it("waits for a pinned slot while other waiters take others", async () => {
    const pool = new SlotPool(2);
    const s0 = await pool.acquire();
    const s1 = await pool.acquire();
    const pinned = pool.acquire({ slot: 1 });
    const any = pool.acquire();
    s0.release();
    expect((await any).slot).toBe(0);
    expect(pool.queued).toBe(1);
    s1.release();
    expect((await pinned).slot).toBe(1);
    expect(await code(pool.acquire({ slot: 5 }))).toBe("bad_request");
  });

  it("rejects waiters and new callers once closed", async () => {
    const pool = new SlotPool(1);
    await pool.acquire();
    const waiting = pool.acquire();
    pool.close();
    expect(await code(waiting)).toBe("unavailable");
    expect(await code(pool.acquire())).toBe("unavailable");
  });

  it("checks its options", () => {
    expect(() => new SlotPool(0)).toThrow(RangeError);
    expect(() => new SlotPool(1, { maxQueue: -1 })).toThrow(RangeError);
    expect(new SlotPool(3).maxQueue).toBe(12);
  });
});
