import { describe, expect, it } from "vitest";
import { createLruPolicy } from "./lru.ts";

describe("lru", () => {
  it("evicts the least recently used entry first", () => {
    const p = createLruPolicy();
    for (const k of ["a", "b", "c"]) p.touch(k, 10);
    expect(p.victim()).toBe("a");
    p.touch("a", 10);
    expect(p.victim()).toBe("b");
    expect(p.evict("b")).toBe(true);
    expect(p.victim()).toBe("c");
    expect([...p.keys()].sort()).toEqual(["a", "c"]);
  });

  it("reports hits and keeps byte accounting as entries grow", () => {
    const p = createLruPolicy();
    expect(p.touch("a", 100)).toBe(false);
    expect(p.touch("a", 150)).toBe(true);
    p.touch("b", 50);
    expect(p.size).toBe(2);
    expect(p.bytes).toBe(200);
    expect(p.remove("a")).toBe(true);
    expect(p.remove("a")).toBe(false);
    expect(p.bytes).toBe(50);
    expect(p.has("a")).toBe(false);
  });

  it("chooses only among resident candidates and never the incoming key", () => {
    const p = createLruPolicy();
    for (const k of ["a", "b", "c", "d"]) p.touch(k, 1);
    expect(p.victim({ candidates: ["d", "c", "zz"] })).toBe("c");
    expect(p.victim({ candidates: ["zz"] })).toBeUndefined();
    expect(p.victim({ incoming: "a" })).toBe("b");
    expect(p.victim({ candidates: ["a"], incoming: "a" })).toBeUndefined();
    expect(p.victim({ candidates: [] })).toBeUndefined();
  });

  it("rejects sizes that are not byte counts", () => {
    const p = createLruPolicy();
    expect(() => p.touch("a", -1)).toThrow(/size -1/);
    expect(() => p.touch("a", Number.NaN)).toThrow(RangeError);
  });
});
