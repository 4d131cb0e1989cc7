import { describe, expect, it } from "vitest";
import { simulate } from "./cache.ts";
import { createLruPolicy } from "./lru.ts";
import { createPolicy } from "./mod.ts";
import type { CachePolicy } from "./policy.ts";
import type { TraceRequest } from "./traces.ts";

const req = (key: string, sizeBytes: number, tokens = sizeBytes): TraceRequest => ({ key, sizeBytes, tokens });

describe("simulate", () => {
  it("counts hits, misses and evictions in a byte budget", () => {
    // Budget 100: a(40) b(40) then c(40) evicts a (LRU); a returns and evicts b.
    const trace = [req("a", 40), req("b", 40), req("a", 40), req("c", 40), req("b", 40), req("a", 40)];
    const r = simulate(trace, createLruPolicy(), { budgetBytes: 100 });
    expect(r).toMatchObject({ requests: 6, hits: 1, misses: 5, evictions: 3, bytesEvicted: 120, bypassed: 0 });
    expect(r.hitRatio).toBeCloseTo(1 / 6);
    expect(r.tokenHitRatio).toBeCloseTo(40 / 240);
  });

  it("never admits a session larger than the budget, and drops one that grew past it", () => {
    const trace = [req("a", 50), req("big", 500), req("a", 50), req("a", 150), req("a", 50)];
    const r = simulate(trace, createLruPolicy(), { budgetBytes: 100 });
    expect(r).toMatchObject({ hits: 1, bypassed: 2, evictions: 0 });
  });

  it("keeps every policy within the budget after each request", () => {
    for (const name of ["lru", "lfu", "adaptive"] as const) {
      const policy = createPolicy(name, { budgetBytes: 300 });
      const seen: number[] = [];
      // Records the resident bytes as each request arrives, i.e. after the previous one's evictions.
      const watched: CachePolicy = new Proxy(policy, {
        get(target, prop) {
          if (prop === "touch") {
            return (...args: Parameters<CachePolicy["touch"]>) => {
              seen.push(target.bytes);
              return target.touch(...args);
            };
          }
          const value: unknown = Reflect.get(target, prop, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
      const trace = Array.from({ length: 500 }, (_, i) => req(`k${(i * 7919) % 37}`, 10 + ((i * 31) % 90)));
      simulate(trace, watched, { budgetBytes: 300 });
      expect(Math.max(...seen)).toBeLessThanOrEqual(300);
    }
  });

  it("passes token costs when asked, which makes GDSF rank by frequency alone", () => {
    const trace = [req("small", 10), req("big", 90), req("small", 10), req("big", 90), req("mid", 50)];
    // Unit cost: value per byte favours the small session, so the big one goes.
    const unit = createPolicy("adaptive", { variant: "gdsf" });
    simulate(trace, unit, { budgetBytes: 140 });
    expect(unit.has("small")).toBe(true);
    expect(unit.has("big")).toBe(false);
    const byTokens = createPolicy("adaptive", { variant: "gdsf" });
    simulate(trace, byTokens, { budgetBytes: 140, cost: "tokens" });
    // With cost ∝ size every entry's value per byte is its use count: ties go by recency.
    expect(byTokens.has("big")).toBe(true);
    expect(byTokens.has("small")).toBe(false);
  });

  it("rejects a budget that is not positive", () => {
    expect(() => simulate([], createLruPolicy(), { budgetBytes: 0 })).toThrow(/budget of 0/);
  });
});
