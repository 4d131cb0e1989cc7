import { describe, expect, it } from "vitest";
import { BytesPerToken, createRandom, createZipf, loopTrace, scanTrace, shiftingTrace, standardTraces, zipfTrace } from "./traces.ts";

describe("traces", () => {
  it("are deterministic for a seed and differ across seeds", () => {
    expect(zipfTrace({ requests: 500, seed: 7 })).toEqual(zipfTrace({ requests: 500, seed: 7 }));
    expect(zipfTrace({ requests: 500, seed: 7 }).requests).not.toEqual(zipfTrace({ requests: 500, seed: 8 }).requests);
  });

  it("draws Zipf ranks with P(k) ∝ 1/k^s", () => {
    const sample = createZipf(100, 1, createRandom(3));
    const counts = new Array<number>(100).fill(0);
    for (let i = 0; i < 50_000; i++) counts[sample()]!++;
    // Rank 1 against rank 2 and rank 10: ratios 2 and 10, within sampling noise.
    expect(counts[0]! / counts[1]!).toBeGreaterThan(1.8);
    expect(counts[0]! / counts[1]!).toBeLessThan(2.2);
    expect(counts[0]! / counts[9]!).toBeGreaterThan(8);
    expect(counts[0]! / counts[9]!).toBeLessThan(12);
  });

  it("gives each session one size of 200–2,000 tokens × bytes per token", () => {
    const trace = zipfTrace({ requests: 2_000, bytesPerToken: BytesPerToken.m134 });
    const sizes = new Map<string, number>();
    for (const r of trace.requests) {
      expect(r.tokens).toBeGreaterThanOrEqual(200);
      expect(r.tokens).toBeLessThanOrEqual(2_000);
      expect(r.sizeBytes).toBe(r.tokens * 36_900);
      expect(sizes.get(r.key) ?? r.sizeBytes).toBe(r.sizeBytes);
      sizes.set(r.key, r.sizeBytes);
    }
  });

  it("mixes in scans of one-off sessions", () => {
    const trace = scanTrace({ requests: 1_000, scanEvery: 100, scanLength: 25 });
    const scans = trace.requests.filter((r) => r.key.startsWith("scan"));
    expect(scans).toHaveLength(200);
    expect(new Set(scans.map((r) => r.key)).size).toBe(200);
    expect(trace.requests.slice(100, 125).every((r) => r.key.startsWith("scan"))).toBe(true);
  });

  it("moves the hot set between phases", () => {
    const trace = shiftingTrace({ requests: 20_000, phaseLength: 10_000, sessions: 1_000 });
    const top = (from: number) => {
      const counts = new Map<string, number>();
      for (const r of trace.requests.slice(from, from + 10_000)) counts.set(r.key, (counts.get(r.key) ?? 0) + 1);
      return new Set(
        [...counts]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 10)
          .map(([k]) => k),
      );
    };
    const before = top(0);
    const overlap = [...top(10_000)].filter((k) => before.has(k)).length;
    expect(overlap).toBeLessThan(5);
  });

  it("cycles through the loop sessions in order", () => {
    const loop = loopTrace({ requests: 3_000, loopSessions: 50, loopFraction: 0.5 }).requests.filter((r) => r.key.startsWith("loop"));
    expect(loop.length).toBeGreaterThan(1_300);
    expect(loop.map((r) => r.key)).toEqual(loop.map((_, i) => `loop${i % 50}`));
  });

  it("names the four standard traces", () => {
    expect(standardTraces({ requests: 100 }).map((t) => t.name)).toEqual(["zipf", "scan", "shifting", "loop"]);
  });

  it("rejects impossible workloads", () => {
    expect(() => zipfTrace({ minTokens: 10, maxTokens: 5 })).toThrow(/min ≤ max/);
    expect(() => createZipf(0, 1, Math.random)).toThrow(/positive integer/);
  });
});
