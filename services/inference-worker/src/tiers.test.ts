/**
 * The worker's L2 and L3 tiers choose their victims by the eviction strategy the sessions
 * name, against a real nats-server (L3 is its object store). The slot is a stand-in that writes
 * and reads KV state files of a given size, so the budgets can be filled exactly; the engine's
 * own save and restore are covered by `test/tiers.test.ts`.
 */
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CacheStrategy } from "@atlas/contracts";
import { createLogger } from "@atlas/log";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SlotAccess } from "./engine.ts";
import { KvTiers, l3Bucket, l3Name } from "./tiers.ts";

const KB = 1024;
let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

/** A slot that holds `state` (a session's KV bytes); save writes it, restore reads it back. */
function slot(): SlotAccess & { hold(session: string, bytes: number): void; held(): string } {
  let state = Buffer.alloc(0);
  return {
    slot: 0,
    get tokens() {
      return state.length / KB;
    },
    save: async (path) => {
      await writeFile(path, state);
      return state.length;
    },
    restore: async (path) => {
      state = await readFile(path);
    },
    hold(session, bytes) {
      state = Buffer.alloc(bytes, session);
    },
    held: () => String.fromCharCode(state[0] ?? 0),
  };
}

async function open(prefix: string, l2Kb: number, l3Kb: number): Promise<KvTiers> {
  return KvTiers.open({
    nc,
    prefix,
    workerId: "w1",
    fingerprint: "f".repeat(64),
    dir: await mkdtemp(join(tmpdir(), "atlas-tiers-")),
    l2BudgetBytes: l2Kb * KB,
    l3BudgetBytes: l3Kb * KB,
    restore: "always",
    log: createLogger({ service: "tiers-test", level: "silent" }),
  });
}

/**
 * Runs turns of one-letter sessions on one slot: each turn's session takes the slot over (the
 * previous one is snapshotted to L2) and is restored from L2/L3 if it was there.
 */
async function turns(tiers: KvTiers, s: ReturnType<typeof slot>, sessions: string, strategy: CacheStrategy, kb = 100): Promise<void> {
  let current: string | null = null;
  for (const session of sessions) {
    const from = await tiers.prepare(s, { session: current, strategy }, session, { strategy });
    if (from === undefined) s.hold(session, kb * KB);
    else expect(s.held()).toBe(session); // restored its own bytes
    current = session;
  }
  await tiers.prepare(s, { session: current, strategy }, null, { strategy }); // the last one goes to L2 too
}

const inL2 = (tiers: KvTiers) =>
  tiers
    .l2Entries()
    .map((e) => e.session)
    .sort()
    .join("");

describe("L2 evicts by the sessions' strategy", () => {
  // Room for 3 snapshots of 100 KiB. "a" and "b" take turns twice (each switch snapshots the
  // one leaving and restores the one coming back: a use each), then "c" and "d" come once.
  const pattern = "ababcd";

  it("lru lets the least recently used go: a", async () => {
    const tiers = await open("t-lru", 300, 100_000);
    await turns(tiers, slot(), pattern, "lru");
    await expect.poll(() => inL2(tiers)).toBe("bcd");
  });

  it("lfu keeps the sessions used most: a stays, c (used once, before d) goes", async () => {
    const tiers = await open("t-lfu", 300, 100_000);
    await turns(tiers, slot(), pattern, "lfu");
    await expect.poll(() => inL2(tiers)).toBe("abd");
  });

  it("an evicted snapshot is promoted to L3 on its way out, and comes back from there", async () => {
    const tiers = await open("t-l3", 300, 100_000);
    const s = slot();
    await turns(tiers, s, pattern, "lru");
    await expect.poll(() => inL2(tiers)).toBe("bcd");
    const store = await new Objm(nc).open(l3Bucket("t-l3"));
    await expect.poll(async () => (await store.info(l3Name("a", "f".repeat(64))))?.size ?? 0).toBe(100 * KB);
    expect(await tiers.prepare(s, { session: null }, "a", { strategy: "lru" })).toBe("l3");
    expect(s.held()).toBe("a");
  });
});

describe("L3 makes room by the uploading session's strategy", () => {
  /** Saves sessions to L3 through L2 (budget 0: every snapshot goes straight on). */
  async function save(tiers: KvTiers, s: ReturnType<typeof slot>, sessions: string, strategy: CacheStrategy) {
    await turns(tiers, s, sessions, strategy);
  }
  const names = async (prefix: string) => {
    const store = await new Objm(nc).open(l3Bucket(prefix));
    const all = (await store.list()).filter((o) => !o.deleted).map((o) => o.name);
    return "abcdefgh"
      .split("")
      .filter((x) => all.includes(l3Name(x, "f".repeat(64))))
      .join("");
  };

  it("lru: the oldest object leaves", async () => {
    const tiers = await open("t3-lru", 0, 350); // three 100 KiB objects fit
    const s = slot();
    await save(tiers, s, "ababc", "lru"); // a and b saved twice, c once and last
    await expect.poll(() => names("t3-lru")).toBe("abc");
    await save(tiers, s, "d", "lru");
    await expect.poll(() => names("t3-lru")).toBe("bcd");
  });

  it("lfu: the object saved least often leaves, however recent", async () => {
    const tiers = await open("t3-lfu", 0, 350);
    const s = slot();
    await save(tiers, s, "ababc", "lfu"); // a and b saved twice, c once and last
    await expect.poll(() => names("t3-lfu")).toBe("abc");
    await save(tiers, s, "d", "lfu");
    await expect.poll(() => names("t3-lfu")).toBe("abd"); // c: saved once, though the most recent
  });
});
