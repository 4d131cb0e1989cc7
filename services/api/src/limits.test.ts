import * as fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Admission, AdmissionError, RateLimiter, type Refusal, TokenBucket } from "./limits.ts";

describe("TokenBucket", () => {
  it("starts full, refills at its rate, never above capacity, and says how long to wait", () => {
    const b = new TokenBucket(60, 60, 0); // one per second
    expect(b.take(60, 0)).toBe(true);
    expect(b.take(1, 0)).toBe(false);
    expect(b.waitMs(1, 0)).toBe(1000);
    expect(b.take(1, 1000)).toBe(true);
    expect(b.level(10_000_000)).toBe(60);
    // A request larger than the bucket needs a full bucket, then empties it.
    expect(b.waitMs(500, 10_000_000)).toBe(0);
    expect(b.take(500, 10_000_000)).toBe(true);
    expect(b.level(10_000_000)).toBe(0);
  });

  it("keeps debt from usage beyond a reservation, and gives back up to capacity", () => {
    const b = new TokenBucket(100, 600, 0);
    b.force(150, 0);
    expect(b.level(0)).toBe(-50);
    expect(b.waitMs(10, 0)).toBe(6000); // 60 tokens at 10 per second
    b.give(1000, 0);
    expect(b.level(0)).toBe(100);
  });

  it("never lets more through than capacity plus what refilled (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 50 })), { maxLength: 100 }),
        (perMinute, steps) => {
          const b = new TokenBucket(perMinute, perMinute, 0);
          let now = 0;
          let taken = 0;
          for (const [dt, n] of steps) {
            now += dt;
            if (b.take(n, now)) taken += Math.min(n, perMinute);
            expect(taken).toBeLessThanOrEqual(perMinute + (now * perMinute) / 60_000 + 1e-6);
          }
        },
      ),
    );
  });
});

describe("RateLimiter", () => {
  it("is off with every limit at 0", () => {
    const r = new RateLimiter({ rpm: 0, tpm: 0, sessionRpm: 0, sessionTpm: 0 });
    expect(r.enabled).toBe(false);
    for (let i = 0; i < 10_000; i++) expect(r.request("t/s")).toBeUndefined();
    expect(r.reserve("t/s", 1e9)).toHaveProperty("settle");
  });

  it("limits each session on its own and everyone together, with Retry-After in whole seconds", () => {
    let now = 0;
    const r = new RateLimiter({ rpm: 5, tpm: 0, sessionRpm: 3, sessionTpm: 0, now: () => now });
    for (let i = 0; i < 3; i++) expect(r.request("a/1")).toBeUndefined();
    expect(r.request("a/1")).toEqual({ scope: "session", kind: "requests", retryAfterS: 20, limitPerMinute: 3 });
    expect(r.request("a/2")).toBeUndefined();
    expect(r.request("b")).toBeUndefined();
    const global = r.request("c") as Refusal;
    expect(global).toMatchObject({ scope: "global", kind: "requests", retryAfterS: 12 });
    now += 12_000;
    expect(r.request("c")).toBeUndefined();
  });

  it("reserves tokens, refunds what was not used, and charges usage beyond the reservation", () => {
    let now = 0;
    const r = new RateLimiter({ rpm: 0, tpm: 0, sessionRpm: 0, sessionTpm: 600, now: () => now });
    const a = r.reserve("s", 400);
    expect(a).toHaveProperty("settle");
    expect(r.reserve("s", 300)).toMatchObject({ scope: "session", kind: "tokens", retryAfterS: 10 });
    (a as { settle(n: number): void }).settle(100); // 300 back
    const b = r.reserve("s", 300);
    expect(b).toHaveProperty("settle");
    (b as { settle(n: number): void }).settle(800); // 500 of debt beyond the 300
    expect(r.reserve("s", 1)).toMatchObject({ retryAfterS: 31 }); // level -300: 301 tokens at 10 per second
    now += 31_000;
    expect(r.reserve("s", 1)).toHaveProperty("settle");
  });

  it("keeps at most maxSessions buckets, dropping refilled ones first", () => {
    let now = 0;
    const r = new RateLimiter({ rpm: 0, tpm: 0, sessionRpm: 60, sessionTpm: 0, now: () => now, maxSessions: 10 });
    for (let i = 0; i < 100; i++) {
      r.request(`s${i}`);
      now += 1;
    }
    expect(r.sessions).toBeLessThanOrEqual(10);
  });
});

describe("Admission", () => {
  it("admits up to max, queues up to the bound, refuses beyond it, and serves the queue in order", async () => {
    const adm = new Admission({ max: 2, queue: 2, waitMs: 10_000 });
    const r1 = await adm.enter();
    const r2 = await adm.enter();
    const order: number[] = [];
    const w3 = adm.enter().then((r) => {
      order.push(3);
      return r;
    });
    const w4 = adm.enter().then((r) => {
      order.push(4);
      return r;
    });
    await expect(adm.enter()).rejects.toMatchObject({ reason: "queue_full" });
    expect(adm.running).toBe(2);
    expect(adm.queued).toBe(2);
    r1();
    r1(); // releasing twice frees one place only
    const r3 = await w3;
    expect(adm.running).toBe(2);
    r2();
    const r4 = await w4;
    expect(order).toEqual([3, 4]);
    r3();
    r4();
    expect(adm.running).toBe(0);
    expect(adm.refused.queue_full).toBe(1);
  });

  it("refuses a request that waited too long, and one whose client left stops waiting", async () => {
    const adm = new Admission({ max: 1, queue: 5, waitMs: 30 });
    const release = await adm.enter();
    await expect(adm.enter()).rejects.toBeInstanceOf(AdmissionError);
    const ac = new AbortController();
    const left = adm.enter(ac.signal);
    ac.abort(new Error("gone"));
    await expect(left).rejects.toThrow("gone");
    expect(adm.queued).toBe(0);
    release();
    const again = await adm.enter();
    again();
  });
});
