import { describe, expect, it } from "vitest";
import { createEnsemblePolicy, EnsemblePolicy } from "./ensemble.ts";
import { createLfuPolicy } from "./lfu.ts";
import { createLruPolicy } from "./lru.ts";
import type { CachePolicy } from "./policy.ts";

function access(p: CachePolicy, key: string, capacity: number): void {
  p.touch(key, 1);
  while (p.bytes > capacity) p.evict(p.victim({ incoming: key })!);
}

describe("ensemble", () => {
  it("follows the expert whose shadow cache hits most", () => {
    const p = new EnsemblePolicy({
      budgetBytes: 4,
      window: 50,
      experts: [() => createLfuPolicy({ halvingPeriod: 40 }), () => createLruPolicy()],
    });
    expect(p.leader).toBe("lfu-halving");
    // Four keys used often, then four new ones in a cycle: LFU clings to the old ones.
    for (let i = 0; i < 120; i++) access(p, `old${i % 4}`, 4);
    for (let i = 0; i < 200; i++) access(p, `new${i % 4}`, 4);
    expect(p.leader).toBe("lru");
    // A hot key used twice, then four one-off keys: LRU loses it every time, LFU keeps it.
    for (let i = 0; i < 600; i++) access(p, i % 6 < 2 ? "hot" : `once${i}`, 4);
    expect(p.leader).toBe("lfu-halving");
    expect(p.has("hot")).toBe(true);
  });

  it("honours candidates through its leader", () => {
    const p = createEnsemblePolicy({ budgetBytes: 10, experts: [() => createLruPolicy()] });
    for (const k of ["a", "b", "c"]) p.touch(k, 1);
    expect(p.victim()).toBe("a");
    expect(p.victim({ candidates: ["c", "b"] })).toBe("b");
    expect(p.algorithm).toBe("ensemble(lru)");
  });

  it("needs at least one expert", () => {
    expect(() => createEnsemblePolicy({ experts: [] })).toThrow(/no experts/);
  });
});
