import { describe, expect, it } from "vitest";
import { createLfuPolicy } from "./lfu.ts";
import type { CachePolicy } from "./policy.ts";

/** One request through a cache of `capacity` unit-size entries. */
function access(p: CachePolicy, key: string, capacity: number): void {
  p.touch(key, 1);
  while (p.bytes > capacity) p.evict(p.victim({ incoming: key })!);
}

describe("lfu", () => {
  it("evicts the least frequently used entry, the least recent among equals", () => {
    const p = createLfuPolicy();
    for (const k of ["a", "b", "c", "a", "a", "b"]) p.touch(k, 1);
    expect(p.victim()).toBe("c");
    p.touch("c", 1);
    p.touch("c", 1);
    // a: 3 uses, b: 2, c: 3 → b; then among a and c (3 each) the older, a.
    expect(p.victim()).toBe("b");
    p.evict("b");
    expect(p.victim()).toBe("a");
    expect(p.victim({ incoming: "a" })).toBe("c");
    expect(p.victim({ candidates: ["c", "nope"] })).toBe("c");
  });

  for (const aging of ["halving", "dynamic"] as const) {
    it(`lets a formerly hot entry leave (aging: ${aging})`, () => {
      const p = createLfuPolicy({ aging, halvingPeriod: 20 });
      for (let i = 0; i < 50; i++) access(p, "hot", 4);
      let left = -1;
      for (let i = 0; i < 2_000 && left < 0; i++) {
        // Fresh keys, each used twice: the new working set.
        access(p, `k${i}`, 4);
        access(p, `k${i}`, 4);
        if (!p.has("hot")) left = i;
      }
      expect(left).toBeGreaterThan(0);
    });
  }

  it("without aging in sight, a hot entry stays", () => {
    const p = createLfuPolicy({ aging: "halving", halvingPeriod: 1_000_000 });
    for (let i = 0; i < 50; i++) access(p, "hot", 4);
    for (let i = 0; i < 500; i++) {
      access(p, `k${i}`, 4);
      access(p, `k${i}`, 4);
    }
    expect(p.has("hot")).toBe(true);
  });

  it("rejects a halving period that is not a positive integer", () => {
    expect(() => createLfuPolicy({ aging: "halving", halvingPeriod: 0 })).toThrow(/period/);
  });
});
