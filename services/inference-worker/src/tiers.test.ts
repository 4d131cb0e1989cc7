/**
 * The worker's L2 and L3 tiers choose their victims by the eviction strategy the sessions
 * name, against a real nats-server (L3 is its object store). The slot is a stand-in that writes
 * and reads KV state files of a given size, so the budgets can be filled exactly; the engine's
 * own save and restore are covered by `test/tiers.test.ts`.
 */
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BusJetStream } from "@atlas/bus";
import { type CacheStrategy, l3Bucket } from "@atlas/contracts";
import { createLogger } from "@atlas/log";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SlotAccess } from "./engine.ts";
import { KvTiers, l3Name } from "./tiers.ts";

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
    jetstream: new BusJetStream(nc),
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
  await tiers.settled();
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
  /** Snapshots a slot holding `session` and uploads it to L3 now (as drain and shutdown do). */
  async function saveNow(tiers: KvTiers, session: string, strategy: CacheStrategy): Promise<void> {
    await tiers.snapshotSlot(
      async (path) => {
        await writeFile(path, Buffer.alloc(100 * KB, session));
        return { bytes: 100 * KB, tokens: 100 };
      },
      session,
      strategy,
    );
    await tiers.promote(session);
  }
  const names = async (prefix: string) => {
    const store = await new Objm(nc).open(l3Bucket(prefix));
    const all = (await store.list()).filter((o) => !o.deleted).map((o) => o.name);
    return "abcd"
      .split("")
      .filter((x) => all.includes(l3Name(x, "f".repeat(64))))
      .join("");
  };

  for (const [strategy, left, why] of [
    ["lru", "bcd", "the oldest save (a) leaves"],
    ["lfu", "abd", "the session saved least often (c) leaves, though its save is the newest"],
  ] as const) {
    it(`${strategy}: ${why}`, async () => {
      const prefix = `t3-${strategy}`;
      const tiers = await open(prefix, 100_000, 350); // L3 holds three 100 KiB objects
      for (const session of "ababc") await saveNow(tiers, session, strategy); // a, b saved twice; c once, last
      expect(await names(prefix)).toBe("abc");
      await saveNow(tiers, "d", strategy);
      expect(await names(prefix)).toBe(left);
    });
  }
});

describe("at rest: snapshots sealed (compressed, encrypted)", () => {
  const atRest = { ATLAS_MEMORY_KEY: Buffer.alloc(32, 3).toString("base64"), ATLAS_MEMORY_COMPRESSION: "gzip" as const };
  const secret = (session: string) => Buffer.from(`${session}: the marmalade is in the blue jar. `.repeat(2000));

  /** A slot holding readable text, so a raw read can look for it. */
  function textSlot(): SlotAccess & { hold(session: string): void; held(): string } {
    let state = Buffer.alloc(0);
    return {
      slot: 0,
      get tokens() {
        return 100;
      },
      save: async (path) => {
        await writeFile(path, state);
        return state.length;
      },
      restore: async (path) => {
        state = await readFile(path);
      },
      hold: (session) => {
        state = secret(session);
      },
      held: () => String.fromCharCode(state[0] ?? 0),
    };
  }

  it("L2 files and L3 objects hold no plaintext, are smaller, and restore; a flipped byte is refused and recomputed", async () => {
    const dir = await mkdtemp(join(tmpdir(), "atlas-tiers-sealed-"));
    const prefix = "t-sealed";
    const tiers = await KvTiers.open({
      jetstream: new BusJetStream(nc),
      prefix,
      workerId: "w1",
      fingerprint: "f".repeat(64),
      dir,
      l2BudgetBytes: 10 * 1024 * KB,
      l3BudgetBytes: 10 * 1024 * KB,
      restore: "always",
      log: createLogger({ service: "tiers-test", level: "silent" }),
      atRest,
    });
    expect(tiers.atRest?.encrypted).toBe(true);
    const s = textSlot();
    s.hold("a");
    expect(await tiers.prepare(s, { session: null }, "a", { fresh: true })).toBeUndefined();
    // "a" leaves the slot for "b": snapshotted to L2, sealed.
    await tiers.prepare(s, { session: "a" }, "b", { fresh: true });
    s.hold("b");
    const files = (await readdir(dir)).filter((f) => f.endsWith(".kv"));
    expect(files).toHaveLength(1);
    const l2 = await readFile(join(dir, files[0] as string));
    expect(l2.includes("marmalade")).toBe(false);
    expect(l2.length).toBeLessThan(secret("a").length / 10);
    expect(tiers.l2Entries()).toEqual([{ session: "a", bytes: l2.length, tokens: 100 }]);
    // L3 gets the sealed bytes as they are.
    await tiers.promote("a");
    const store = await new Objm(nc).open(l3Bucket(prefix));
    const name = l3Name("a", "f".repeat(64));
    const object = Buffer.from((await store.getBlob(name)) ?? new Uint8Array());
    expect(object.equals(l2)).toBe(true);
    // Back from L2: the slot holds a's text again.
    expect(await tiers.prepare(s, { session: "b" }, "a")).toBe("l2");
    expect(s.held()).toBe("a");
    // One flipped byte in the L3 object: refused (never loaded), the object dropped, the turn recomputes.
    const bad = Uint8Array.from(object);
    bad[bad.length - 20] = (bad[bad.length - 20] as number) ^ 1;
    await tiers.forget("a"); // L2 gone too, so L3 is the only copy
    await store.putBlob({ name }, bad);
    s.hold("c");
    expect(await tiers.prepare(s, { session: "c" }, "a")).toBeUndefined();
    expect(s.held()).toBe("c"); // nothing was loaded
    expect(tiers.atRest?.refused).toBe(1);
    expect((await store.info(name).catch(() => null))?.deleted ?? true).toBe(true);
    // A flipped byte in an L2 file: refused as well.
    await tiers.prepare(s, { session: "c" }, "d", { fresh: true }); // c goes to L2
    s.hold("d");
    const cHash = createHash("sha256").update("c").digest("hex").slice(0, 40);
    const newest = (await readdir(dir))
      .filter((f) => f.startsWith(cHash))
      .sort((x, y) => Number(y.split(".")[1]) - Number(x.split(".")[1]));
    const cFile = join(dir, newest[0] as string);
    const cBytes = await readFile(cFile);
    cBytes[30] = (cBytes[30] as number) ^ 1;
    await writeFile(cFile, cBytes);
    expect(await tiers.prepare(s, { session: "d" }, "c")).toBeUndefined();
    expect(tiers.atRest?.refused).toBe(2);
    expect(tiers.l2Entries().map((e) => e.session)).not.toContain("c");
  });
});
