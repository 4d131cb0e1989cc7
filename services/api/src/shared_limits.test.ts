/**
 * The shared global limit (`shared_limits.ts`) against a real nats-server: two instances leasing
 * from one cluster bucket never spend more than it holds (every permit is spent once, or is still
 * in the bucket), refill follows the clock, an empty bucket says how long to wait, and a store that
 * does not answer makes an instance limit alone until it answers again. The clock is a variable,
 * so the counts are exact whatever the machine's speed.
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { ATLAS_VERSION, RateLimitState, rateLimitBucket, rateLimitKey } from "@atlas/contracts";
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

  async function levelOf(bus: NatsBus, prefix: string): Promise<number> {
    const kv = await bus.jetstream.openKv(rateLimitBucket(prefix));
    const e = await kv.get(rateLimitKey("global_requests"));
    return RateLimitState.parse(e?.json()).level;
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
      // What it admits now comes from the cluster bucket (full again, less any batch a timed-out
      // withdrawal took without telling), which it empties; its own bucket is left alone.
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
    const bus = await connect(nats.url, "p4");
    buses.push(bus);
    const tokens = new SharedBucket({
      scope: "global_tokens",
      perMinute: 1000,
      source: new KvPermitSource(bus.jetstream, "p4"),
      now: () => t,
    });
    const limiter = new RateLimiter({ rpm: 0, tpm: 1000, sessionRpm: 0, sessionTpm: 0, now: () => t, shared: { tokens } });
    const first = (await limiter.reserve("s", 400)) as Reservation;
    expect(first.tokens).toBe(400);
    expect(await limiter.reserve("s", 400)).toHaveProperty("settle");
    // Leased: 400 + a batch of 10, then the 390 missing + 10; 190 are left in the cluster bucket. 400
    // more need 390 beyond the 10 held: (390 − 190) / 1000 of a minute = 12 s.
    expect(await limiter.reserve("s", 400)).toEqual({ scope: "global", kind: "tokens", retryAfterS: 12, limitPerMinute: 1000 });
    // The first used 100: its 300 others come back to this instance, and 400 fit again.
    first.settle(100);
    expect(tokens.held).toBe(310);
    expect(await limiter.reserve("s", 400)).toHaveProperty("settle");
    await tokens.close();
  });
});
