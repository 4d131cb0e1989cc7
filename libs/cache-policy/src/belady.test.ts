import { describe, expect, it } from "vitest";
import { simulateBelady } from "./belady.ts";
import { simulate } from "./cache.ts";
import { conversationTrace } from "./conversations.ts";
import { createPolicy } from "./mod.ts";
import { standardTraces } from "./traces.ts";

const req = (key: string, sizeBytes = 10) => ({ key, sizeBytes, tokens: sizeBytes });

describe("simulateBelady", () => {
  it("evicts what is needed furthest in the future, and never admits what is never needed again", () => {
    // Room for two. a b c a b …: on c, a and b are needed before c again (never): c is bypassed.
    const r = simulateBelady([req("a"), req("b"), req("c"), req("a"), req("b")], 20);
    expect(r).toMatchObject({ hits: 2, misses: 3, bypassed: 1, evictions: 0 });
    // a b c b c a: on c, a is needed last: a goes, then b and c hit, a misses again.
    const s = simulateBelady([req("a"), req("b"), req("c"), req("b"), req("c"), req("a")], 20);
    expect(s).toMatchObject({ hits: 2, evictions: 1 });
    // LRU on the first trace hits nothing: each session is evicted just before it comes back.
    expect(simulate([req("a"), req("b"), req("c"), req("a"), req("b")], createPolicy("lru"), { budgetBytes: 20 }).hits).toBe(0);
  });

  it("counts a session that grows out of the tier as evicted, and one larger than the tier as bypassed", () => {
    const r = simulateBelady([req("a", 10), req("b", 10), req("a", 30), req("b", 10), req("a", 40)], 30);
    expect(r.hits).toBeGreaterThanOrEqual(1);
    expect(simulateBelady([req("x", 50), req("x", 50)], 30)).toMatchObject({ hits: 0, bypassed: 2 });
  });

  it("is never beaten by the online policies on the benchmark traces", () => {
    const traces = [...standardTraces({ requests: 8_000, sessions: 400 }), conversationTrace({ requests: 8_000, concurrent: 60 })];
    for (const t of traces) {
      for (const budgetBytes of [8 * 2 ** 20, 32 * 2 ** 20]) {
        const bound = simulateBelady(t.requests, budgetBytes).hitRatio;
        for (const p of ["lru", "lfu", "adaptive"] as const) {
          const online = simulate(t.requests, createPolicy(p, { budgetBytes }), { budgetBytes }).hitRatio;
          expect(online, `${t.name} ${p} at ${budgetBytes}`).toBeLessThanOrEqual(bound);
        }
      }
    }
  });
});

describe("conversationTrace", () => {
  it("is reproducible, grows sessions turn by turn, and brings a few back much later", () => {
    const a = conversationTrace({ requests: 20_000, concurrent: 50, seed: 7 });
    expect(conversationTrace({ requests: 20_000, concurrent: 50, seed: 7 }).requests).toEqual(a.requests);
    const byKey = new Map<string, number[]>();
    a.requests.forEach((r, i) => {
      byKey.set(r.key, [...(byKey.get(r.key) ?? []), i]);
    });
    const sizes = a.requests.filter((r) => r.key === a.requests[0]?.key).map((r) => r.sizeBytes);
    expect(sizes.every((s, i) => i === 0 || s > (sizes[i - 1] ?? 0))).toBe(true);
    const gaps = [...byKey.values()].map((at) => Math.max(...at.slice(1).map((x, i) => x - (at[i] ?? 0)), 0));
    expect(gaps.filter((g) => g >= 5_000).length).toBeGreaterThan(0); // returns
    expect(gaps.filter((g) => g >= 5_000).length).toBeLessThan(byKey.size / 5); // a few of them
  });
});
