import { describe, expect, it } from "vitest";
import { ArcPolicy } from "./arc.ts";
import { createLruPolicy } from "./lru.ts";
import type { CachePolicy } from "./policy.ts";

/** One request through a cache of `capacity` unit-size entries. */
function access(p: CachePolicy, key: string, capacity: number): void {
  p.touch(key, 1);
  while (p.bytes > capacity) p.evict(p.victim({ incoming: key })!);
}

describe("arc", () => {
  it("a B1 ghost hit grows the T1 target, a B2 ghost hit shrinks it", () => {
    const p = new ArcPolicy({ budgetBytes: 4 });
    for (const k of ["x", "x", "a", "b", "c", "d"]) access(p, k, 4);
    // T1 was over its target (0): its oldest entry became a B1 ghost.
    expect(p.has("a")).toBe(false);
    expect(p.lists).toEqual({ t1: 3, t2: 1, b1: 1, b2: 0 });
    access(p, "a", 4);
    expect(p.target).toBe(1);
    expect(p.has("a")).toBe(true);
    expect(p.lists.t2).toBe(2);
    // Evict a from T2 (as if only its slot were idle): a B2 ghost; its return shrinks p.
    expect(p.victim({ candidates: ["a"] })).toBe("a");
    p.evict("a");
    expect(p.lists.b2).toBe(1);
    access(p, "a", 4);
    expect(p.target).toBe(0);
  });

  it("keeps entries used twice through a scan that flushes LRU", () => {
    const arc = new ArcPolicy({ budgetBytes: 4 });
    const lru = createLruPolicy();
    for (const p of [arc, lru]) {
      for (const k of ["x", "y", "x", "y"]) access(p, k, 4);
      for (let i = 0; i < 20; i++) access(p, `scan${i}`, 4);
    }
    expect(arc.has("x") && arc.has("y")).toBe(true);
    expect(lru.has("x") || lru.has("y")).toBe(false);
  });

  it("takes a restricted victim from the preferred list, else the other", () => {
    const p = new ArcPolicy({ budgetBytes: 10 });
    for (const k of ["a", "b", "a", "c", "d"]) p.touch(k, 1); // T2: a; T1: b, c, d
    expect(p.victim()).toBe("b");
    expect(p.victim({ candidates: ["a", "d", "c"] })).toBe("c");
    expect(p.victim({ candidates: ["a"] })).toBe("a");
    expect(p.victim({ incoming: "b" })).toBe("c");
  });

  it("remove leaves no ghost, so a return is a plain miss", () => {
    const p = new ArcPolicy({ budgetBytes: 2 });
    for (const k of ["x", "x", "a", "b"]) access(p, k, 2);
    expect(p.lists.b1).toBe(1);
    p.remove("a");
    expect(p.lists.b1).toBe(0);
    access(p, "a", 2);
    expect(p.target).toBe(0);
  });

  it("size-aware lists evict the entry that frees the most bytes per use", () => {
    const p = new ArcPolicy({ budgetBytes: 1_000, recency: "gds", frequency: "gdsf" });
    p.touch("small", 10);
    p.touch("big", 500);
    p.touch("mid", 100);
    expect(p.victim()).toBe("big");
    expect(p.algorithm).toBe("arc-gdsf");
  });
});
