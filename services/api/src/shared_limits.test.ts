/**
 * The shared global limit (`shared_limits.ts`) against a real nats-server: two instances leasing
 * from one cluster bucket never spend more than it holds (every permit is spent once, or is still
 * in the bucket), refill follows the clock, an empty bucket says how long to wait, and a store that
 * does not answer makes an instance limit alone until it answers again. Token reservations: the
 * batch grows with them (counted in KV writes), a debt is paid as the bucket refills, and a
 * withdrawal answered after its timeout gives its permits back. The clock is a variable, so the
 * counts are exact whatever the machine's speed.
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { ATLAS_VERSION, type RateLimitScope, RateLimitState, rateLimitBucket, rateLimitKey } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimiter, type Reservation } from "./limits.ts";
import { SharedBucket } from "./shared_limits.ts";
import { KvPermitSource } from "./shared_limits_store.ts";

const connect = (url: string, prefix: string): Promise<NatsBus> =>
  Bus.connect({ servers: url, prefix, service: { name: "api", version: ATLAS_VERSION }, discoverable: false });

/** Takes one permit `times` times from the buckets in turn; how many each admitted. */
async function drive(buckets: SharedBucket[], times: number): Promise<number[]> {
  const admitted = buckets.map(() => 0);
  for (let i = 0; i < times; i++) {
    const b = i % buckets.length;
    if ((await buckets[b]?.take(1)) === 0) admitted[b] = (admitted[b] ?? 0) + 1;
  }
  return admitted;
}

describe("SharedBucket", () => {
  let nats: NatsServer;
  const buses: NatsBus[] = [];
  beforeAll(async () => {
    nats = await startNatsServer();
  });
  afterAll(async () => {
    for (const b of buses) await b.close().catch(() => {});
    await nats?.stop();
  });

  async function instances(prefix: string, n: number, now: () => number, options: { leaseMs?: number } = {}) {
    const out: SharedBucket[] = [];
    for (let i = 0; i < n; i++) {
      const bus = await connect(nats.url, prefix);
      buses.push(bus);
      out.push(
        new SharedBucket({ scope: "global_requests", perMinute: 600, source: new KvPermitSource(bus.jetstream, prefix), now, ...options }),
      );
    }
    return { buckets: out, bus: buses.at(-1) as NatsBus };
  }

  async function levelOf(bus: NatsBus, prefix: string, scope: RateLimitScope = "global_requests"): Promise<number> {
    const kv = await bus.jetstream.openKv(rateLimitBucket(prefix));
    const e = await kv.get(rateLimitKey(scope));
    return RateLimitState.parse(e?.json()).level;
  }

  /** Writes to the cluster bucket so far: its key's revision (the KV bucket holds that key alone). */
  async function writesOf(bus: NatsBus, prefix: string, scope: RateLimitScope): Promise<number> {
    const kv = await bus.jetstream.openKv(rateLimitBucket(prefix));
    return (await kv.get(rateLimitKey(scope)))?.revision ?? 0;
  }

  async function tokenLimit(prefix: string, perMinute: number, now: () => number) {
    const bus = await connect(nats.url, prefix);
    buses.push(bus);
    const tokens = new SharedBucket({ scope: "global_tokens", perMinute, source: new KvPermitSource(bus.jetstream, prefix), now });
    const limiter = new RateLimiter({ rpm: 0, tpm: perMinute, sessionRpm: 0, sessionTpm: 0, now, shared: { tokens } });
    return { bus, tokens, limiter };
  }

  it("spends each permit of the cluster bucket once, across two instances, and refills with the clock", async () => {
    let t = 1_000_000;
    const { buckets, bus } = await instances("p1", 2, () => t);
    expect(buckets[0]?.batch).toBe(6); // 1 % of 600
    // The clock stands still: one minute's worth and no more.
    const first = await drive(buckets, 1000);
    expect(first[0] ?? 0).toBeGreaterThan(0);
    expect(first[1] ?? 0).toBeGreaterThan(0);
    expect((first[0] ?? 0) + (first[1] ?? 0)).toBe(600);
    // Empty: the wait is the time one permit takes to refill (60 s / 600).
    expect(await buckets[0]?.take(1)).toBe(100);
    // Six seconds later 60 more.
    t += 6_000;
    const second = await drive(buckets, 300);
    expect((second[0] ?? 0) + (second[1] ?? 0)).toBe(60);
    for (const b of buckets) await b.close();
    expect(await levelOf(bus, "p1")).toBeLessThan(1);
  });

  it("gives back what it leased and did not spend, for the other instance", async () => {
    let t = 2_000_000;
    const { buckets, bus } = await instances("p2", 2, () => t, { leaseMs: 100 });
    const [a, b] = buckets as [SharedBucket, SharedBucket];
    // A takes one and a batch ahead (7); 593 are left to the cluster.
    expect(await a.take(1)).toBe(0);
    expect(a.held).toBe(6);
    expect(await levelOf(bus, "p2")).toBe(600 - 7);
    // B takes all that is left in the cluster bucket; A's are not there.
    expect(await drive([b], 700)).toEqual([593]);
    // A's lease runs out: its 6 go back, and B gets them (and the one permit 101 ms refilled).
    t += 100;
    await expect.poll(() => a.held, { timeout: 2000 }).toBe(0);
    await expect.poll(() => levelOf(bus, "p2")).toBeGreaterThanOrEqual(6);
    t += 1; // past B's "empty" wait
    expect(await drive([b], 100)).toEqual([6 + 1]);
    // A leases again after its give-back (10 refilled in a second).
    t += 1000;
    expect(await a.take(1)).toBe(0);
    for (const x of buckets) await x.close();
  });

  it("limits alone (the full limit) while the store does not answer, and shares again when it does", async () => {
    const own = await startNatsServer();
    const port = own.port;
    const storeDir = own.storeDir;
    let server: NatsServer | undefined = own;
    let t = 3_000_000;
    const bus = await connect(own.url, "p3");
    buses.push(bus);
    const warned: string[] = [];
    const log = { warn: (_: object, msg: string) => void warned.push(msg), info: () => {} };
    const bucket = new SharedBucket({
      scope: "global_requests",
      perMinute: 600,
      source: new KvPermitSource(bus.jetstream, "p3"),
      now: () => t,
      timeoutMs: 200,
      retryMs: 100,
      leaseMs: 50,
      log,
    });
    try {
      expect(await drive([bucket], 10)).toEqual([10]); // shared
      expect(bucket.fallback).toBe(false);
      const held = bucket.held;
      await server.stop({ keepStore: true });
      server = undefined;
      // The held permits go first; then the store does not answer: the bucket limits alone, with the full limit.
      const alone = await drive([bucket], 700);
      expect(bucket.fallback).toBe(true);
      expect(warned).toHaveLength(1);
      expect(alone).toEqual([held + 600]);
      server = await startNatsServer({ port, storeDir });
      // Shares again once the store answers (tried every retryMs on the clock).
      await expect
        .poll(
          () => {
            if (bucket.fallback) t += 200;
            return bucket.fallback;
          },
          { timeout: 15_000 },
        )
        .toBe(false);
      // What it admits now comes from the cluster bucket (full again; a withdrawal answered after
      // its timeout gave its batch back), which it empties; its own bucket is left alone.
      await bucket.idle();
      const again = (await drive([bucket], 700))[0] ?? 0;
      expect(again).toBeGreaterThan(0);
      expect(again).toBeLessThanOrEqual(600 + 2); // and what refilled if the poll moved the clock while the store answered
      expect(bucket.fallback).toBe(false);
      expect(await levelOf(bus, "p3")).toBeLessThan(1);
    } finally {
      await bucket.close();
      await server?.stop();
    }
  });

  it("holds a RateLimiter's global tokens: reservations, refunds into the lease, the 429's wait", async () => {
    const t = 4_000_000;
    const { tokens, limiter } = await tokenLimit("p4", 1000, () => t);
    const first = (await limiter.reserve("s", 400)) as Reservation;
    expect(first.tokens).toBe(400);
    expect(await limiter.reserve("s", 400)).toHaveProperty("settle");
    // The batch is twice the average reservation, at most 5 % of the limit: 50. Leased: 400 + 50,
    // then the 350 missing + 50; 150 are left in the cluster bucket. 400 more need 350 beyond the
    // 50 held: (350 − 150) / 1000 of a minute = 12 s.
    expect(tokens.batch).toBe(50);
    expect(await limiter.reserve("s", 400)).toEqual({ scope: "global", kind: "tokens", retryAfterS: 12, limitPerMinute: 1000 });
    // The first used 100: its 300 others come back to this instance, and 400 fit again.
    first.settle(100);
    expect(tokens.held).toBe(350);
    expect(await limiter.reserve("s", 400)).toHaveProperty("settle");
    await tokens.close();
  });

  it("sizes the batch to the reservations: after the first, those over 1 % of the limit are served from what is held", async () => {
    const t = 5_000_000;
    /** `count` reservations of `size`, each after the lease the previous one started: how many waited for the store, and the KV writes. */
    const serve = async (prefix: string, size: number, count: number) => {
      const { bus, tokens, limiter } = await tokenLimit(prefix, 100_000, () => t);
      let waited = 0;
      for (let i = 0; i < count; i++) {
        const r = limiter.reserve("s", size);
        if (r instanceof Promise) waited += 1;
        expect(await r).toHaveProperty("settle");
        await tokens.idle();
      }
      const result = { waited, writes: await writesOf(bus, prefix, "global_tokens"), batch: tokens.batch };
      await tokens.close();
      return result;
    };
    // 1.5 % of the limit: batches of 3 000 (twice the average), one write per two reservations. With
    // batches of 1 % each reservation waited for a write of its own.
    expect(await serve("p5a", 1500, 20)).toEqual({ waited: 1, writes: 10, batch: 3000 });
    // 4 %: the batch is at its cap (5 %) and the next one is leased under 4 000 held.
    const big = await serve("p5b", 4000, 20);
    expect(big.waited).toBe(1);
    expect(big.batch).toBe(5000);
    expect(big.writes).toBe(16); // the first lease (9 000), then 15 batches of 5 000
  });

  it("pays a debt beyond the bucket's capacity as the bucket refills, instead of refusing for ever", async () => {
    let t = 6_000_000;
    const { tokens, limiter } = await tokenLimit("p6", 1000, () => t);
    // Clamped to the bucket's 1 000; the answer used 2 500: 1 500 owed.
    const first = (await limiter.reserve("s", 3000)) as Reservation;
    await tokens.idle();
    first.settle(2500);
    expect(tokens.held).toBe(-1500);
    // A minute later the bucket is full: its 1 000 pay part of the debt, 500 are still owed, and
    // 100 more need 600: 36 s of refill.
    t += 60_000;
    expect(await limiter.reserve("s", 100)).toEqual({ scope: "global", kind: "tokens", retryAfterS: 36, limitPerMinute: 1000 });
    t += 36_000;
    expect(await limiter.reserve("s", 100)).toHaveProperty("settle");
    expect(tokens.held).toBeGreaterThanOrEqual(0);
    await tokens.close();
  });

  it("gives back the permits of a withdrawal answered after its timeout", async () => {
    const own = await startNatsServer();
    const t = 7_000_000;
    const bus = await connect(own.url, "p7");
    buses.push(bus);
    const bucket = new SharedBucket({
      scope: "global_requests",
      perMinute: 600,
      source: new KvPermitSource(bus.jetstream, "p7"),
      now: () => t,
      timeoutMs: 200,
      retryMs: 60_000,
      leaseMs: 60_000,
    });
    let paused = false;
    try {
      expect(await bucket.take(1)).toBe(0); // 1 spent, 6 held, 593 in the cluster bucket (1 write)
      // The server stops answering (paused, not gone): 4 more from what is held leave 2, under half
      // a batch, so the next batch is asked for, and not answered in time.
      paused = true;
      await own.pause();
      expect(await drive([bucket], 4)).toEqual([4]);
      await expect.poll(() => bucket.fallback, { timeout: 5000 }).toBe(true);
      own.resume();
      paused = false;
      // It answers: the late withdrawal took 6 (a write), and gave them back (another).
      await expect.poll(() => writesOf(bus, "p7", "global_requests"), { timeout: 10_000 }).toBe(3);
      await bucket.idle();
      expect(await levelOf(bus, "p7")).toBe(593);
      expect(bucket.held).toBe(2);
    } finally {
      if (paused) own.resume();
      await bucket.close();
      await own.stop();
    }
  });
});
