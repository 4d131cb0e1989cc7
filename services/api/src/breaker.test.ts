import { BusError } from "@atlas/bus";
import * as fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CircuitBreaker, CircuitOpenError, isUnreachable } from "./breaker.ts";

const down = () => new BusError("unavailable", "No service answers");
const answered = () => new BusError("unavailable", "No live worker", { origin: "remote" });

function clocked(options: Partial<ConstructorParameters<typeof CircuitBreaker>[0]> = {}) {
  let now = 1_000_000;
  const changes: string[] = [];
  const b = new CircuitBreaker({
    name: "scheduler",
    failureThreshold: 3,
    openMs: 1000,
    maxOpenMs: 4000,
    now: () => now,
    onChange: (_n, from, to) => changes.push(`${from}>${to}`),
    ...options,
  });
  return { b, changes, advance: (ms: number) => (now += ms) };
}

describe("CircuitBreaker", () => {
  it("opens after the threshold of consecutive failures, and a success in between resets the count", async () => {
    const { b } = clocked();
    for (let i = 0; i < 2; i++) await expect(b.run(() => Promise.reject(down()))).rejects.toBeInstanceOf(BusError);
    await b.run(async () => 1);
    for (let i = 0; i < 2; i++) await expect(b.run(() => Promise.reject(down()))).rejects.toBeInstanceOf(BusError);
    expect(b.state).toBe("closed");
    await expect(b.run(() => Promise.reject(down()))).rejects.toBeInstanceOf(BusError);
    expect(b.state).toBe("open");
    await expect(b.run(async () => 1)).rejects.toBeInstanceOf(CircuitOpenError);
  });

  it("ignores failures of calls that began before the service's newest answer or the breaker's last change", () => {
    const { b, advance } = clocked();
    // Sent just before an outage: they time out later, after a newer call was answered.
    const early = [b.attempt(), b.attempt(), b.attempt()];
    b.attempt()?.success();
    for (const a of early) a?.failure();
    expect(b.snapshot()).toMatchObject({ state: "closed", failures: 0 });
    const beforeSnapshot = [b.attempt(), b.attempt(), b.attempt()];
    b.recordSuccess(); // a snapshot arrived from the service
    for (const a of beforeSnapshot) a?.failure();
    expect(b.snapshot()).toMatchObject({ state: "closed", failures: 0 });
    // Begun before the breaker opened: their failures neither reopen a half-open breaker nor count
    // once the trial has closed it.
    const before = [b.attempt(), b.attempt()];
    for (let i = 0; i < 3; i++) b.attempt()?.failure();
    expect(b.state).toBe("open");
    advance(1000);
    const trial = b.attempt();
    before[0]?.failure();
    expect(b.state).toBe("half_open");
    trial?.success();
    before[1]?.failure();
    expect(b.snapshot()).toMatchObject({ state: "closed", failures: 0 });
    // Fresh failures still count, an answer to an older call in between notwithstanding.
    const older = b.attempt();
    b.attempt()?.failure();
    older?.success();
    for (let i = 0; i < 3; i++) b.attempt()?.failure();
    expect(b.state).toBe("open");
  });

  it("does not count errors the service answered with, nor cancellations", async () => {
    const { b } = clocked();
    for (let i = 0; i < 10; i++) {
      await expect(b.run(() => Promise.reject(answered()))).rejects.toBeInstanceOf(BusError);
      await expect(b.run(() => Promise.reject(new BusError("cancelled", "gone")))).rejects.toBeInstanceOf(BusError);
    }
    expect(b.state).toBe("closed");
    expect(isUnreachable(new BusError("timeout", "slow"))).toBe(true);
    expect(isUnreachable(new BusError("overloaded", "busy"))).toBe(false);
  });

  it("lets one trial through when half-open: success closes, failure reopens for twice as long (capped)", async () => {
    const { b, advance, changes } = clocked();
    for (let i = 0; i < 3; i++) b.attempt()?.failure();
    expect(b.state).toBe("open");
    expect(b.retryAfterMs).toBe(1000);
    advance(1000);
    expect(b.state).toBe("half_open");
    const trial = b.attempt();
    expect(trial).toBeDefined();
    expect(b.attempt()).toBeUndefined(); // only one trial at a time
    trial?.failure();
    expect(b.state).toBe("open");
    expect(b.retryAfterMs).toBe(2000);
    advance(2000);
    b.attempt()?.failure();
    expect(b.retryAfterMs).toBe(4000);
    advance(4000);
    b.attempt()?.failure();
    expect(b.retryAfterMs).toBe(4000); // capped
    advance(4000);
    b.attempt()?.success();
    expect(b.state).toBe("closed");
    expect(b.snapshot()).toMatchObject({ name: "scheduler", state: "closed", failures: 0, opened: 4, retry_in_ms: 0 });
    expect(changes[0]).toBe("closed>open");
    expect(changes.at(-1)).toBe("half_open>closed");
    // Back to the first period after a recovery.
    for (let i = 0; i < 3; i++) b.attempt()?.failure();
    expect(b.retryAfterMs).toBe(1000);
  });

  it("frees the half-open trial when the caller cancels", () => {
    const { b, advance } = clocked();
    for (let i = 0; i < 3; i++) b.attempt()?.failure();
    advance(1000);
    b.attempt()?.release();
    expect(b.attempt()).toBeDefined();
  });

  it("probes by itself when half-open and closes when the probe succeeds", async () => {
    let healthy = false;
    let probes = 0;
    const b = new CircuitBreaker({
      name: "metrics",
      failureThreshold: 1,
      openMs: 20,
      probe: async () => {
        probes += 1;
        if (!healthy) throw new Error("still down");
      },
    });
    b.attempt()?.failure();
    expect(b.state).toBe("open");
    await expect.poll(() => probes, { timeout: 2000 }).toBeGreaterThanOrEqual(1);
    expect(b.state).not.toBe("closed");
    healthy = true;
    await expect.poll(() => b.state, { timeout: 2000 }).toBe("closed");
    b.close();
  });

  it("probes when a call is refused, so a service that came back is noticed under traffic", async () => {
    let healthy = false;
    let probes = 0;
    const b = new CircuitBreaker({
      name: "persistence",
      failureThreshold: 1,
      openMs: 60_000,
      probeGapMs: 0,
      probe: async () => {
        probes += 1;
        if (!healthy) throw new Error("down");
      },
    });
    b.attempt()?.failure();
    expect(b.attempt()).toBeUndefined();
    await expect.poll(() => probes).toBe(1);
    expect(b.state).toBe("open");
    healthy = true;
    expect(b.attempt()).toBeUndefined(); // refused, but starts a probe
    await expect.poll(() => b.state, { timeout: 2000 }).toBe("closed");
    expect(b.attempt()).toBeDefined();
    b.close();
  });

  it("never lets two trials run at once, and never admits while open (property)", () => {
    const op = fc.oneof(
      fc.constant("attempt" as const),
      fc.constant("success" as const),
      fc.constant("failure" as const),
      fc.constant("release" as const),
      fc.integer({ min: 1, max: 3000 }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const { b, advance } = clocked();
        const outstanding: { a: NonNullable<ReturnType<CircuitBreaker["attempt"]>>; trial: boolean }[] = [];
        for (const o of ops) {
          if (typeof o === "number") advance(o);
          else if (o === "attempt") {
            const before = b.state;
            const trialRunning = outstanding.some((x) => x.trial);
            const a = b.attempt();
            if (before === "open" || (before === "half_open" && trialRunning)) expect(a).toBeUndefined();
            else expect(a).toBeDefined();
            if (a !== undefined) outstanding.push({ a, trial: before === "half_open" });
          } else {
            const x = outstanding.shift();
            if (x === undefined) continue;
            x.a[o]();
          }
          expect(b.retryAfterMs).toBeGreaterThanOrEqual(0);
          expect(b.retryAfterMs).toBeLessThanOrEqual(4000);
        }
      }),
    );
  });
});
