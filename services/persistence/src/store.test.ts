import type { MemoryLayer, SessionDocument } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tail } from "./service.ts";
import { CHUNK_BYTES, SessionStore } from "./store.ts";

let server: NatsServer;
let nc1: NatsConnection;
let nc2: NatsConnection;
let a: SessionStore;
let b: SessionStore;

async function storeOn(nc: NatsConnection): Promise<SessionStore> {
  const js = jetstream(nc);
  const kv = await new Kvm(js).create("unit_memory", { history: 1, storage: "file" });
  return new SessionStore({ kv, jsm: await jetstreamManager(nc), bucket: "unit_memory" });
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

beforeAll(async () => {
  server = await startNatsServer();
  nc1 = await connect({ servers: server.url });
  nc2 = await connect({ servers: server.url });
  a = await storeOn(nc1);
  b = await storeOn(nc2); // a second "instance" on its own connection
});
afterAll(async () => {
  await nc1?.close();
  await nc2?.close();
  await server?.stop();
});

describe("SessionStore", () => {
  it("round-trips a small document inline and ids with dots and colons", async () => {
    const d = doc("a.b:c-1", [layer("l1")]);
    const w = await a.write(d);
    expect(w.created).toBe(true);
    const r = await b.read("t1", "a.b:c-1");
    expect(r?.doc).toEqual(d);
    expect(r?.revision).toBe(w.revision);
    expect(await a.read("t2", "a.b:c-1")).toBeUndefined(); // another tenant
  });

  it("round-trips a 2 MB document through chunks, and replaces it without leaving old chunks", async () => {
    const big = "x".repeat(1024 * 1024);
    const d = doc("big", [layer("l1", big), layer("l2", big)]);
    await a.write(d);
    const r = await b.read("t1", "big");
    expect(r?.doc).toEqual(d);
    expect(r?.bytes).toBeGreaterThan(2 * 1024 * 1024);
    const chunkKeys = async () => {
      const keys: string[] = [];
      for await (const k of await a.kv.keys("c.>")) keys.push(k);
      return keys;
    };
    const before = await chunkKeys();
    expect(before.length).toBe(Math.ceil((r?.bytes ?? 0) / CHUNK_BYTES));
    await a.write({ ...d, layers: [layer("l3", big), layer("l4", big)] });
    const after = await chunkKeys();
    expect(after.length).toBe(before.length);
    expect(after.some((k) => before.includes(k))).toBe(false);
    expect((await a.read("t1", "big"))?.doc.layers.map((l) => l.id)).toEqual(["l3", "l4"]);
  });

  it("never loses a layer when two instances append to one session at once", async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `c${i}`);
    await Promise.all(
      ids.map((id, i) => (i % 2 === 0 ? a : b).appendLayer({ tenant: "t1", sessionId: "race", model: "m", layer: layer(id) })),
    );
    const r = await a.read("t1", "race");
    expect(new Set(r?.doc.layers.map((l) => l.id))).toEqual(new Set(ids));
    expect(r?.doc.layers.length).toBe(30);
  });

  it("applies an append once per layer id", async () => {
    expect(await a.appendLayer({ tenant: "t1", sessionId: "once", model: "m", layer: layer("x") })).toBe(true);
    expect(await b.appendLayer({ tenant: "t1", sessionId: "once", model: "m", layer: layer("x") })).toBe(false);
    expect((await a.read("t1", "once"))?.doc.layers.length).toBe(1);
  });

  it("refuses a write at a stale revision", async () => {
    const w = await a.write(doc("rev", []));
    await a.write(doc("rev", [layer("n")]), { ifRevision: w.revision });
    await expect(b.write(doc("rev", []), { ifRevision: w.revision })).rejects.toMatchObject({ code: "conflict" });
    await expect(b.write(doc("rev", []), { ifRevision: 0 })).rejects.toMatchObject({ code: "conflict" });
  });

  it("deletes, leaving a marker that tells a deleted session from a missing one", async () => {
    await a.write(doc("gone", [layer("l", "y".repeat(CHUNK_BYTES * 2))]));
    expect(await a.delete("t1", "gone")).toBe(true);
    expect(await a.delete("t1", "gone")).toBe(false);
    expect(await a.read("t1", "gone")).toBeUndefined();
    expect((await a.manifest("t1", "gone")).state).toBe("deleted");
    expect((await a.manifest("t1", "never")).state).toBe("missing");
    const keys: string[] = [];
    for await (const k of await a.kv.keys("c.t1.>")) keys.push(k);
    expect(keys.filter((k) => k.includes(".Z29uZQ."))).toEqual([]); // "gone" in base64url
    // A deleted session can be created again.
    expect((await a.write(doc("gone", []), { ifRevision: 0 })).created).toBe(true);
  });

  it("lists a tenant's sessions in pages, and no other tenant's", async () => {
    for (const id of ["p1", "p2", "p3", "p4", "p5"]) await a.write(doc(id, [], "pages"));
    await a.write(doc("other", [], "pages2"));
    const first = await a.list("pages", { limit: 2 });
    expect(first.data.map((s) => s.session_id)).toEqual(["p1", "p2"]);
    expect(first.has_more).toBe(true);
    const rest = await a.list("pages", { limit: 10, after: "p2" });
    expect(rest.data.map((s) => s.session_id)).toEqual(["p3", "p4", "p5"]);
    expect(rest.has_more).toBe(false);
  });

  it("collects chunk generations that no manifest points at, once they are old", async () => {
    await a.kv.put("c.t1.b3JwaGFu.1-abc.0", "stale"); // born at the epoch: old
    await a.kv.put(`c.t1.b3JwaGFu.${Date.now().toString(36)}-abc.0`, "fresh"); // a writer may be about to commit it
    expect(await a.collectOrphans()).toBe(1);
    const keys: string[] = [];
    for await (const k of await a.kv.keys("c.t1.b3JwaGFu.>")) keys.push(k);
    expect(keys).toHaveLength(1);
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
