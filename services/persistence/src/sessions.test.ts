import { randomBytes } from "node:crypto";
import { Bus, type NatsBus } from "@atlas/bus";
import { type MemoryLayer, memoryKeysBucket, memoryNames, type SessionDocument, sessionFromToken, sessionToken } from "@atlas/contracts";
import { createLogger } from "@atlas/log";
import { openSealer } from "@atlas/sealed";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHUNK_BYTES, Chunks } from "./chunks.ts";
import { migrateFormat1 } from "./legacy.ts";
import { ensureLogStream, SessionLog } from "./log.ts";
import { tail } from "./records.ts";
import { COMPACT_RECORDS, Sessions } from "./sessions.ts";

const PREFIX = "unit";
const names = memoryNames(PREFIX);
const logger = createLogger({ service: "test", level: "silent" });
/** Every instance encrypts at rest with the same master key (each loads the data keys itself). */
const atRest = { ATLAS_MEMORY_KEY: Buffer.alloc(32, 7).toString("base64"), ATLAS_MEMORY_COMPRESSION: "gzip" as const };
let server: NatsServer;
const buses: NatsBus[] = [];
let a: Sessions;
let b: Sessions;

async function instance(): Promise<Sessions> {
  const bus = await Bus.connect({ servers: server.url, prefix: PREFIX, service: { name: "persistence", version: "0" } });
  buses.push(bus);
  const js = bus.jetstream.client;
  const jsm = await bus.jetstream.manager();
  const kv = await bus.jetstream.kv(names.kv, { history: 1 });
  await ensureLogStream(bus.jetstream, PREFIX);
  const sealer = await openSealer(atRest, await bus.jetstream.kv(memoryKeysBucket(PREFIX), { history: 1 }));
  const s = new Sessions({
    bus,
    log: new SessionLog({ js, jsm, prefix: PREFIX, chunks: new Chunks({ kv, jsm, bucket: names.kv }), sealer }),
    logger,
  });
  await s.start();
  return s;
}

function layer(id: string, text = `text of ${id}`): MemoryLayer {
  return {
    id,
    created_at: new Date().toISOString(),
    messages: [
      { role: "user", content: text },
      { role: "assistant", content: `reply to ${id}` },
    ],
    usage: null,
  };
}

function doc(sessionId: string, layers: MemoryLayer[], tenant = "t1"): SessionDocument {
  const now = new Date().toISOString();
  return { version: 1, session_id: sessionId, tenant, created_at: now, updated_at: now, model: "m", layers, metadata: {} };
}

const ids = (d: SessionDocument | undefined) => d?.layers.map((l) => l.id);
/** Lets every instance hear every record published so far. */
const settle = async () => {
  for (const bus of buses) await bus.nc.flush();
};

beforeAll(async () => {
  server = await startNatsServer();
  a = await instance();
  b = await instance(); // a second persistence instance on its own connection
});
afterAll(async () => {
  for (const bus of buses) await bus.close();
  await server?.stop();
});

describe("Sessions", () => {
  it("round-trips a document and ids with dots and colons; another tenant sees nothing", async () => {
    const d = doc("a.b:c-1", [layer("l1")]);
    const w = await a.put(d);
    expect(w.created).toBe(true);
    const r = await b.validated("t1", "a.b:c-1");
    expect(r.doc).toEqual(d);
    expect(r.seq).toBe(w.revision);
    expect((await a.validated("t2", "a.b:c-1")).doc).toBeUndefined();
  });

  it("round-trips a 2 MB document through chunks", async () => {
    // Random text: compression must not shrink it below the chunk size.
    const big = randomBytes(768 * 1024).toString("base64");
    const d = doc("big", [layer("l1", big), layer("l2", big)]);
    await a.put(d);
    expect((await b.validated("t1", "big")).doc).toEqual(d);
    await a.put({ ...d, layers: [layer("l3", big)] });
    expect(ids((await b.validated("t1", "big")).doc)).toEqual(["l3"]);
    expect(await a.log.chunks.collect((t, token) => a.liveGenerations(t, sessionFromToken(token)), Date.now() + 3600_000)).toBe(1);
    expect(ids((await a.validated("t1", "big")).doc)).toEqual(["l3"]);
  });

  it("appends one record per layer, once per layer id, and keeps every instance's cache current", async () => {
    expect((await a.recall("t1", "turns")).found).toBe(false);
    await b.current("t1", "turns"); // both instances cache the (empty) session
    // Turns alternate between the instances, as a queue group hands them out; a turn reaches an
    // instance through NATS after the previous one's record did (`settle` stands for that hop).
    for (let i = 0; i < 6; i++) {
      await (i % 2 === 0 ? a : b).add("t1", "turns", "m", layer(`t${i}`));
      await settle();
    }
    expect(await a.add("t1", "turns", "m", layer("t0"))).toEqual({ duplicate: true });
    await settle();
    const stored = await a.log.read("t1", "turns");
    expect(ids(stored.doc)).toEqual(["t0", "t1", "t2", "t3", "t4", "t5"]);
    const before = { a: a.stats.cold_reads, b: b.stats.cold_reads };
    expect(ids((await a.current("t1", "turns")).doc)).toEqual(ids(stored.doc));
    expect(ids((await b.current("t1", "turns")).doc)).toEqual(ids(stored.doc));
    expect({ a: a.stats.cold_reads, b: b.stats.cold_reads }).toEqual(before); // served from the caches
    const r = await b.recall("t1", "turns", 2);
    expect(r).toMatchObject({ found: true, layers: 2, layers_total: 6 });
    expect(r.messages[0]).toEqual({ role: "user", content: "text of t4" });
  });

  it("never loses a layer when two instances append to one session at once, and caches agree with the log", async () => {
    await a.current("t1", "race");
    await b.current("t1", "race");
    const all = Array.from({ length: 30 }, (_, i) => `c${i}`);
    await Promise.all(all.map((id, i) => (i % 2 === 0 ? a : b).add("t1", "race", "m", layer(id))));
    await settle();
    const stored = ids((await a.log.read("t1", "race")).doc);
    expect(new Set(stored)).toEqual(new Set(all));
    expect(stored).toHaveLength(30);
    expect(ids((await a.current("t1", "race")).doc)).toEqual(stored);
    expect(ids((await b.current("t1", "race")).doc)).toEqual(stored);
  });

  it("refuses a write at a stale revision, and creates only what does not exist with revision 0", async () => {
    const w = await a.put(doc("rev", []));
    await a.put(doc("rev", [layer("n")]), w.revision);
    await expect(b.put(doc("rev", []), w.revision)).rejects.toMatchObject({ code: "conflict" });
    await expect(b.put(doc("rev", []), 0)).rejects.toMatchObject({ code: "conflict" });
    const v = await b.validated("t1", "rev");
    await a.add("t1", "rev", "m", layer("more")); // an append is a new revision too
    await expect(b.put(doc("rev", []), v.seq)).rejects.toMatchObject({ code: "conflict" });
  });

  it("deletes, leaving a record that tells a deleted session from a missing one", async () => {
    await a.put(doc("gone", [layer("l", randomBytes(CHUNK_BYTES * 2).toString("base64"))]));
    expect(await a.log.chunks.generations(`c.t1.${sessionToken("gone")}.>`)).toHaveLength(1);
    expect(await a.delete("t1", "gone")).toBe(true);
    expect(await b.delete("t1", "gone")).toBe(false);
    expect((await b.validated("t1", "gone")).doc).toBeUndefined();
    expect((await a.log.last("t1", "gone"))?.rec.op).toBe("deleted");
    expect(await a.log.last("t1", "never")).toBeNull();
    expect(await a.log.chunks.generations(`c.t1.${sessionToken("gone")}.>`)).toEqual([]);
    expect((await a.put(doc("gone", []), 0)).created).toBe(true); // a deleted session can be created again
  });

  it("lists a tenant's sessions in pages, and no other tenant's", async () => {
    for (const id of ["p1", "p2", "p3", "p4", "p5"]) await a.put(doc(id, [], "pages"));
    await a.put(doc("other", [], "pages2"));
    await a.delete("pages", "p4");
    const first = await b.list("pages", { limit: 2 });
    expect(first.data.map((s) => s.session_id)).toEqual(["p1", "p2"]);
    expect(first.has_more).toBe(true);
    const rest = await b.list("pages", { limit: 10, after: "p2" });
    expect(rest.data.map((s) => s.session_id)).toEqual(["p3", "p5"]);
    expect(rest.has_more).toBe(false);
  });

  it("compacts a long log into one base on a cold read", async () => {
    for (let i = 0; i < COMPACT_RECORDS + 3; i++) await a.add("t1", "long", "m", layer(`k${i}`));
    const fresh = await instance(); // no cache: a cold read
    expect((await fresh.current("t1", "long")).doc?.layers).toHaveLength(COMPACT_RECORDS + 3);
    await expect.poll(async () => (await fresh.log.sessions("t1")).get("t1/long")?.records, { timeout: 5000 }).toBe(1);
    await settle();
    await a.add("t1", "long", "m", layer("after"));
    await settle();
    for (const s of [a, b, fresh]) expect((await s.validated("t1", "long")).doc?.layers.at(-1)?.id).toBe("after");
  });
});

describe("format 1", () => {
  it("migrates whole documents (inline and chunked) and delete markers into the log, once", async () => {
    const bus = buses[0] as NatsBus;
    const kv = await bus.jetstream.openKv(names.kv);
    const manifest = (d: SessionDocument, body: unknown) =>
      JSON.stringify({
        v: 1,
        tenant: d.tenant,
        session_id: d.session_id,
        created_at: d.created_at,
        updated_at: d.updated_at,
        model: d.model,
        layers: d.layers.length,
        bytes: 10,
        body,
      });
    const small = doc("old-small", [layer("o1")], "v1");
    await kv.put(`s.v1.${sessionToken("old-small")}`, manifest(small, { kind: "inline", doc: small }));
    const big = doc("old-big", [layer("o2", "z".repeat(CHUNK_BYTES + 10))], "v1");
    const ref = await a.log.chunks.put("v1", "old-big", new TextEncoder().encode(JSON.stringify(big)));
    await kv.put(
      `s.v1.${sessionToken("old-big")}`,
      JSON.stringify({ ...JSON.parse(manifest(big, { kind: "chunks", ...ref })), bytes: ref.bytes }),
    );
    await kv.put(`s.v1.${sessionToken("old-gone")}`, manifest(small, { kind: "inline", doc: small }));
    await kv.delete(`s.v1.${sessionToken("old-gone")}`);
    const jsm = await bus.jetstream.manager();
    const report = await migrateFormat1({ kv, jsm, bucket: names.kv, log: a.log, logger });
    expect(report).toMatchObject({ migrated: 2, deleted: 1, failed: [] });
    expect((await b.validated("v1", "old-small")).doc).toEqual(small);
    expect((await b.validated("v1", "old-big")).doc).toEqual(big);
    expect((await b.log.last("v1", "old-gone"))?.rec.op).toBe("deleted");
    const keys: string[] = [];
    for await (const k of await kv.keys("s.>")) keys.push(k);
    expect(keys).toEqual([]);
    expect(await migrateFormat1({ kv, jsm, bucket: names.kv, log: a.log, logger })).toMatchObject({ migrated: 0, deleted: 0 });
  });
});

describe("tail", () => {
  const layers = [layer("1", "aaaa"), layer("2", "bb"), layer("3", "c")];
  it("keeps the newest layers by count and by bytes", () => {
    expect(tail(layers, 2).map((l) => l.id)).toEqual(["2", "3"]);
    // "c" + "reply to 3" = 11 bytes; with "bb" + "reply to 2" = 23.
    expect(tail(layers, undefined, 23).map((l) => l.id)).toEqual(["2", "3"]);
    expect(tail(layers, undefined, 5).map((l) => l.id)).toEqual([]);
  });
});
