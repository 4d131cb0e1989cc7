/**
 * The api's book of slot credits (pure: an injected clock): which credit a sessionless request
 * takes, when a dispatch asks for one, and when a credit is too old to use.
 */
import { CREDIT_IDLE_MS } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { type Credit, Credits } from "./credits.ts";

const credit = (token: number): Credit => ({ worker_id: "w1", lease_id: `L${token}`, fencing_token: token, slot: token % 4 });

describe("Credits", () => {
  it("hands out the most recently kept credit first, one user at a time", () => {
    const now = { t: 0 };
    const credits = new Credits(4, () => now.t);
    credits.settle("m", false, credit(1));
    now.t = 10;
    credits.settle("m", false, credit(2));
    expect(credits.take("m")).toEqual(credit(2));
    expect(credits.take("m")).toEqual(credit(1));
    expect(credits.take("m")).toBeUndefined(); // both in use
    expect(credits.take("other")).toBeUndefined();
  });

  it("does not use a credit idle for half the worker's idle time or more (the worker may have let it go)", () => {
    const now = { t: 0 };
    const credits = new Credits(4, () => now.t);
    credits.settle("m", false, credit(1));
    now.t = CREDIT_IDLE_MS / 2 - 1;
    const c = credits.take("m");
    expect(c).toEqual(credit(1));
    credits.settle("m", true, c); // kept again: idle from now
    now.t += CREDIT_IDLE_MS / 2;
    expect(credits.take("m")).toBeUndefined();
  });

  it("asks for credits until those held, in use and asked for reach the maximum", () => {
    const credits = new Credits(2, () => 0);
    expect(credits.ask("m")).toBe(true);
    expect(credits.ask("m")).toBe(true);
    expect(credits.ask("m")).toBe(false); // two dispatches in flight already asked
    credits.settle("m", true, credit(1)); // the first came back as a credit
    expect(credits.ask("m")).toBe(false); // one held, one asked
    credits.settle("m", true, null); // the second did not (someone waited)
    expect(credits.ask("m")).toBe(true);
  });

  it("keeps no more than the maximum (the worker lets the rest idle out), and none at 0", () => {
    const credits = new Credits(1, () => 0);
    credits.settle("m", false, credit(1));
    credits.settle("m", false, credit(2));
    expect(credits.take("m")).toEqual(credit(1));
    expect(credits.take("m")).toBeUndefined();
    const off = new Credits(0, () => 0);
    expect(off.ask("m")).toBe(false);
    off.settle("m", false, credit(3));
    expect(off.take("m")).toBeUndefined();
  });
});
