/**
 * The api's book of slot credits (pure: an injected clock): which credit a request takes (by
 * session), when a dispatch asks for one, and when a credit is too old to use.
 */
import { CREDIT_IDLE_MS } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { type Credit, Credits } from "./credits.ts";

const credit = (token: number): Credit => ({ worker_id: "w1", lease_id: `L${token}`, fencing_token: token, slot: token % 4 });

describe("Credits", () => {
  it("hands out the most recently kept credit first, one user at a time", () => {
    const now = { t: 0 };
    const credits = new Credits(4, { now: () => now.t });
    credits.settle("m", false, credit(1));
    now.t = 10;
    credits.settle("m", false, credit(2));
    expect(credits.take("m")).toEqual(credit(2));
    expect(credits.take("m")).toEqual(credit(1));
    expect(credits.take("m")).toBeUndefined(); // both in use
    expect(credits.take("other")).toBeUndefined();
  });

  it("gives a session the credit whose slot holds it, a new session any, and sessionless requests the empty slots first", () => {
    const now = { t: 0 };
    const credits = new Credits(4, { now: () => now.t, slotsOf: () => 4 });
    credits.settle("m", false, credit(1), "t/a");
    now.t = 10;
    credits.settle("m", false, credit(2), null);
    now.t = 20;
    credits.settle("m", false, credit(3), "t/b");
    // A session held by none of the credits goes to the scheduler, which knows where it lives.
    expect(credits.take("m", "t/c")).toBeUndefined();
    // Sessionless: the freshest credit whose slot holds no session, not a conversation's slot.
    expect(credits.take("m")).toEqual(credit(2));
    // A session takes its own slot's credit, whatever its age.
    expect(credits.take("m", "t/a")).toEqual(credit(1));
    // A session with no state anywhere (fresh) takes any; with no empty one, a conversation's
    // slot only while this api holds every slot (else the scheduler finds an empty one).
    expect(credits.take("m", "t/e", true)).toBeUndefined(); // 1 idle + 2 in use of 4 slots
    credits.settle("m", false, credit(4), "t/d");
    expect(credits.take("m", "t/e", true)).toEqual(credit(3)); // all 4 held: the one idle longest
    expect(credits.take("m", "t/d")).toEqual(credit(4));
    expect(credits.take("m")).toBeUndefined();
  });

  it("does not use a credit idle for half the worker's idle time or more (the worker may have let it go)", () => {
    const now = { t: 0 };
    const credits = new Credits(4, { now: () => now.t });
    credits.settle("m", false, credit(1));
    now.t = CREDIT_IDLE_MS / 2 - 1;
    const c = credits.take("m");
    expect(c).toEqual(credit(1));
    credits.settle("m", true, c); // kept again: idle from now
    now.t += CREDIT_IDLE_MS / 2;
    expect(credits.take("m")).toBeUndefined();
  });

  it("asks for credits until those held, in use and asked for reach the maximum", () => {
    const credits = new Credits(2, { now: () => 0 });
    expect(credits.ask("m")).toBe(true);
    expect(credits.ask("m")).toBe(true);
    expect(credits.ask("m")).toBe(false); // two dispatches in flight already asked
    credits.settle("m", true, credit(1)); // the first came back as a credit
    expect(credits.ask("m")).toBe(false); // one held, one asked
    credits.settle("m", true, null); // the second did not (someone waited)
    expect(credits.ask("m")).toBe(true);
  });

  it("keeps no more than the maximum (the worker lets the rest idle out), and none at 0", () => {
    const credits = new Credits(1, { now: () => 0 });
    credits.settle("m", false, credit(1));
    credits.settle("m", false, credit(2));
    expect(credits.take("m")).toEqual(credit(1));
    expect(credits.take("m")).toBeUndefined();
    const off = new Credits(0, { now: () => 0 });
    expect(off.ask("m")).toBe(false);
    off.settle("m", false, credit(3));
    expect(off.take("m")).toBeUndefined();
  });

  describe("when the api holds every slot of the model", () => {
    const book = (slots: number) => new Credits(8, { now: () => 0, slotsOf: (m) => (m === "m" ? slots : undefined) });

    it("is full once its credits (in use or asked for) reach the model's slots, and not for an unknown model", () => {
      const credits = book(2);
      expect(credits.full("m")).toBe(false);
      expect(credits.ask("m")).toBe(true);
      expect(credits.full("m")).toBe(false);
      expect(credits.ask("m")).toBe(true);
      expect(credits.full("m")).toBe(true);
      expect(credits.full("other")).toBe(false);
    });

    it("hands a kept credit straight to a waiter, and wakes one to dispatch when a credit is lost", async () => {
      const credits = book(1);
      expect(credits.ask("m")).toBe(true);
      const signal = new AbortController().signal;
      const first = credits.wait("m", "t", signal);
      const second = credits.wait("m", "t", signal);
      credits.settle("m", true, credit(1)); // the dispatch came back with a credit: to the first waiter
      expect(await first).toEqual(credit(1));
      expect(credits.full("m")).toBe(true); // its claim went along
      credits.settle("m", true, null); // that one was revoked: the second waiter dispatches
      expect(await second).toBeUndefined();
      expect(credits.full("m")).toBe(false);
    });

    it("serves waiting tenants in turn, first come first served within one", async () => {
      const credits = book(1);
      credits.ask("m");
      const signal = new AbortController().signal;
      const order: string[] = [];
      const wait = (tenant: string, id: string) => void credits.wait("m", tenant, signal).then(() => order.push(id));
      wait("a", "a1");
      wait("a", "a2");
      wait("a", "a3");
      wait("b", "b1");
      for (let i = 0; i < 4; i++) {
        credits.settle("m", true, credit(1));
        await Promise.resolve();
      }
      await new Promise((r) => setTimeout(r, 0));
      expect(order).toEqual(["a1", "b1", "a2", "a3"]);
    });

    it("lets a waiter go with cancelled when its request is aborted, and hands the next credit to the one after it", async () => {
      const credits = book(1);
      credits.ask("m");
      const gone = new AbortController();
      const leaving = credits.wait("m", "t", gone.signal);
      const staying = credits.wait("m", "t", new AbortController().signal);
      gone.abort();
      await expect(leaving).rejects.toMatchObject({ code: "cancelled" });
      credits.settle("m", true, credit(2));
      expect(await staying).toEqual(credit(2));
    });

    it("never waits while the maximum is below the model's slots (other slots may be free)", () => {
      const credits = new Credits(2, { now: () => 0, slotsOf: () => 8 });
      credits.ask("m");
      credits.ask("m");
      expect(credits.full("m")).toBe(false);
      expect(credits.ask("m")).toBe(false); // and no more credits either: a plain dispatch
    });

    it("waits only so long, then lets the request queue at the scheduler; the next credit goes to the next waiter", async () => {
      const credits = book(1);
      credits.ask("m");
      const signal = new AbortController().signal;
      expect(await credits.wait("m", "t", signal, 10)).toBeUndefined();
      const next = credits.wait("m", "t", signal);
      credits.settle("m", true, credit(3));
      expect(await next).toEqual(credit(3));
    });
  });
});
