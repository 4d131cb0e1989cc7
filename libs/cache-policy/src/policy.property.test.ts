/**
 * Property test: under any sequence of touch, evict, remove and victim calls, every policy
 * (and every variant of `adaptive`) only ever names a resident victim from the candidate set,
 * never the incoming key, finds one whenever one qualifies, and accounts entries and bytes
 * exactly as a plain map would.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AdaptiveVariant, createAdaptivePolicy } from "./adaptive.ts";
import { createLfuPolicy } from "./lfu.ts";
import { createLruPolicy } from "./lru.ts";
import type { CachePolicy } from "./policy.ts";

const KEYS = ["a", "b", "c", "d", "e", "f", "g", "h"];
const key = fc.constantFrom(...KEYS);

type Op =
  | { op: "touch"; key: string; size: number; cost: number | undefined }
  | { op: "evict" | "remove"; key: string }
  | { op: "victim"; candidates: string[] | undefined; incoming: string | undefined; act: boolean };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("touch" as const),
      key,
      size: fc.integer({ min: 0, max: 120 }),
      cost: fc.option(fc.integer({ min: 1, max: 2_000 }), { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constantFrom("evict" as const, "remove" as const), key }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("victim" as const),
      candidates: fc.option(fc.subarray(KEYS), { nil: undefined }),
      incoming: fc.option(key, { nil: undefined }),
      act: fc.boolean(),
    }),
  },
);

const policies: Record<string, () => CachePolicy> = {
  lru: () => createLruPolicy(),
  "lfu (halving)": () => createLfuPolicy({ halvingPeriod: 7 }),
  "lfu (dynamic)": () => createLfuPolicy({ aging: "dynamic" }),
  ...Object.fromEntries(
    Object.values(AdaptiveVariant).flatMap((variant) => [
      [`adaptive ${variant}`, () => createAdaptivePolicy({ variant, budgetBytes: 250, window: 8 })],
      [`adaptive ${variant}, learned budget`, () => createAdaptivePolicy({ variant })],
    ]),
  ),
};

describe("every policy", () => {
  for (const [name, make] of Object.entries(policies)) {
    it(`${name}: victims are resident candidates, accounting is exact`, () => {
      fc.assert(
        fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
          const p = make();
          const model = new Map<string, number>();
          for (const o of ops) {
            if (o.op === "touch") {
              const hit = p.touch(o.key, o.size, o.cost === undefined ? undefined : { cost: o.cost });
              expect(hit).toBe(model.has(o.key));
              model.set(o.key, o.size);
            } else if (o.op !== "victim") {
              expect(p[o.op](o.key)).toBe(model.delete(o.key));
            } else {
              const v = p.victim({
                ...(o.candidates === undefined ? {} : { candidates: o.candidates }),
                ...(o.incoming === undefined ? {} : { incoming: o.incoming }),
              });
              const eligible = [...model.keys()].filter((k) => k !== o.incoming && (o.candidates?.includes(k) ?? true));
              if (eligible.length === 0) expect(v).toBeUndefined();
              else expect(eligible).toContain(v);
              if (o.act && v !== undefined) {
                expect(p.evict(v)).toBe(true);
                model.delete(v);
              }
            }
            expect(p.size).toBe(model.size);
            expect(p.bytes).toBe([...model.values()].reduce((a, b) => a + b, 0));
            for (const k of KEYS) expect(p.has(k)).toBe(model.has(k));
          }
          expect([...p.keys()].sort()).toEqual([...model.keys()].sort());
        }),
        { numRuns: 150 },
      );
    });
  }
});
