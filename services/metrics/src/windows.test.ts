import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SlidingWindows } from "./windows.ts";

/** A clock the test moves by hand. */
function manualClock(start = 1_000_000) {
  let t = start;
  return {
    now: () => t,
    set: (v: number) => {
      t = v;
    },
    tick: (ms: number) => {
      t += ms;
    },
  };
}

/** Nearest-rank percentile, as HdrHistogram defines it. */
function exactPercentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] ?? 0;
}

const WINDOWS = [10_000, 60_000, 300_000] as const;

describe("SlidingWindows percentiles", () => {
  it("agree with an exact computation within 1% (p50, p95, p99, max, mean)", () => {
    const clock = manualClock();
    const w = new SlidingWindows({ windowsMs: WINDOWS, now: clock.now });
    // A long-tailed mix: sub-millisecond overheads, tens of ms, a few seconds.
    let seed = 42;
    const rand = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const values: number[] = [];
    for (let i = 0; i < 5000; i++) {
      const v = rand() < 0.9 ? 0.05 + rand() * 2 : rand() < 0.9 ? 10 + rand() * 90 : 500 + rand() * 4500;
      values.push(Math.round(v * 1000) / 1000); // whole microseconds, as recorded
      w.observe("lat", values[i] as number);
      if (i % 100 === 99) clock.tick(37); // spread over ~2 s: several slots
    }
    for (let idx = 0; idx < WINDOWS.length; idx++) {
      const s = w.percentiles(idx, "lat");
      expect(s.count).toBe(values.length);
      for (const p of [50, 95, 99] as const) {
        const exact = exactPercentile(values, p);
        expect(Math.abs(s[`p${p}`] - exact) / exact).toBeLessThan(0.01);
      }
      expect(Math.abs(s.max - Math.max(...values)) / Math.max(...values)).toBeLessThan(0.01);
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      expect(Math.abs(s.mean - mean) / mean).toBeLessThan(1e-9);
    }
  });

  it("agree with an exact computation on random data that partly expired (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ dt: fc.integer({ min: 0, max: 3000 }), ms: fc.double({ min: 0.001, max: 60_000, noNaN: true }) }), {
          minLength: 1,
          maxLength: 400,
        }),
        (steps) => {
          const clock = manualClock(0);
          const w = new SlidingWindows({ windowsMs: WINDOWS, now: clock.now });
          const recorded: { t: number; v: number }[] = [];
          for (const { dt, ms } of steps) {
            clock.tick(dt);
            const v = Math.round(ms * 1000) / 1000;
            w.observe("x", v);
            recorded.push({ t: clock.now(), v });
          }
          // The 10 s window holds exactly the values of its slots (1 s each, the current one included).
          const now = clock.now();
          const firstSlot = Math.floor(now / 1000) - 9;
          const inWindow = recorded.filter((r) => Math.floor(r.t / 1000) >= firstSlot).map((r) => r.v);
          const s = w.percentiles(0, "x");
          expect(s.count).toBe(inWindow.length);
          if (inWindow.length === 0) return;
          for (const p of [50, 95, 99] as const) {
            const exact = exactPercentile(inWindow, p);
            // HdrHistogram (3 digits) answers the top of the value's bucket: ≤ 0.1% above, or 1 µs for tiny values.
            expect(s[`p${p}`]).toBeGreaterThanOrEqual(exact - 1e-9);
            expect(s[`p${p}`] - exact).toBeLessThanOrEqual(Math.max(exact * 0.01, 0.001));
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe("SlidingWindows expiry", () => {
  it("drops a value from each window when its window has passed, not before the last slot", () => {
    const clock = manualClock(0);
    const w = new SlidingWindows({ windowsMs: WINDOWS, now: clock.now });
    clock.set(500); // inside slot 0
    w.add("requests");
    w.observe("lat", 12);

    for (const [idx, len] of WINDOWS.entries()) {
      // Still there one slot before the window's end…
      clock.set(len - 1001);
      expect(w.count(idx, "requests")).toBe(1);
      expect(w.percentiles(idx, "lat").count).toBe(1);
      // …and still at the last instant of the window's last slot…
      clock.set(len - 1);
      expect(w.count(idx, "requests")).toBe(1);
      // …gone once the window has moved past slot 0 (at most W after it was recorded).
      clock.set(len);
      expect(w.count(idx, "requests")).toBe(0);
      expect(w.percentiles(idx, "lat")).toMatchObject({ count: 0, p99: 0, max: 0 });
    }
    expect(w.isEmpty()).toBe(true);
  });

  it("keeps the newest values while the old ones leave (percentiles follow the window)", () => {
    const clock = manualClock(0);
    const w = new SlidingWindows({ windowsMs: WINDOWS, now: clock.now });
    for (let i = 0; i < 100; i++) w.observe("lat", 1000); // slow at t=0
    clock.set(5_000);
    for (let i = 0; i < 100; i++) w.observe("lat", 1); // fast at t=5 s
    expect(w.percentiles(0, "lat").p99).toBeGreaterThan(999);
    clock.set(10_000); // the slow ones leave the 10 s window
    expect(w.percentiles(0, "lat")).toMatchObject({ count: 100, max: 1, p50: 1, p99: 1 });
    expect(w.percentiles(1, "lat").count).toBe(200); // still in the 1 min window
    expect(w.percentiles(1, "lat").max).toBeGreaterThan(999);
  });

  it("forgets everything after an idle gap longer than the longest window", () => {
    const clock = manualClock(0);
    const w = new SlidingWindows({ windowsMs: WINDOWS, now: clock.now });
    w.add("requests", 3);
    w.observe("lat", 5);
    w.sampleMax("queued", 7);
    clock.tick(10 * 60_000);
    expect(w.count(2, "requests")).toBe(0);
    expect(w.percentiles(2, "lat").count).toBe(0);
    expect(w.max(2, "queued")).toBe(0);
    w.add("requests");
    expect(w.count(0, "requests")).toBe(1);
  });

  it("gives window maxima and the span a young window covers", () => {
    const clock = manualClock(100_000);
    const w = new SlidingWindows({ windowsMs: WINDOWS, now: clock.now });
    w.sampleMax("queued", 3);
    clock.tick(2_000);
    w.sampleMax("queued", 9);
    w.sampleMax("queued", 4);
    expect(w.max(0, "queued")).toBe(9);
    expect(w.spanMs(0)).toBe(2_000); // started 2 s ago
    clock.tick(9_000);
    expect(w.max(0, "queued")).toBe(9); // the 9 came at +2 s, still inside 10 s
    clock.tick(1_000);
    expect(w.max(0, "queued")).toBe(0);
    expect(w.max(1, "queued")).toBe(9);
    expect(w.spanMs(0)).toBe(9_000); // slots 103..112, the current one just begun
  });

  it("refuses a window that is not a whole number of slots", () => {
    expect(() => new SlidingWindows({ windowsMs: [1500], slotMs: 1000 })).toThrow(/multiple/);
  });
});
