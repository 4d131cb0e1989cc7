/**
 * Session memory CRUD over HTTP against a real cluster (nats-server, persistence, api), with two
 * API keys of two tenants: every endpoint, tenant isolation, validation that names the field,
 * a 2 MB document, idempotent appends, an append's write that does not grow with the session,
 * persistence out of reach, and acknowledged appends across restarts.
 */
import { memoryNames } from "@atlas/contracts";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

const ALPHA = "alpha-key-0001";
const BETA = "beta-key-0002";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ services: ["persistence", "api"], env: { ATLAS_API_KEYS: `${ALPHA}:alpha,${BETA}:beta` } });
});
afterAll(async () => stack?.close());

interface Options {
  key?: string | null;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

async function api(method: string, path: string, o: Options = {}) {
  const headers: Record<string, string> = { ...o.headers };
  const key = o.key === undefined ? ALPHA : o.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  if (o.body !== undefined || o.raw !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${stack.baseUrl}${path}`, {
    method,
    headers,
    ...(o.raw !== undefined ? { body: o.raw } : o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are checked with matchers
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, json };
}

function doc(layers: number, text = "hello") {
  return {
    version: 1,
    model: "atlas-tiny",
    layers: Array.from({ length: layers }, (_, i) => ({
      id: `l${i + 1}`,
      messages: [
        { role: "user", content: `${text} ${i + 1}` },
        { role: "assistant", content: `reply ${i + 1}` },
      ],
      usage: { prompt_tokens: 10 * (i + 1), completion_tokens: 3, total_tokens: 10 * (i + 1) + 3 },
    })),
    metadata: { topic: "tests" },
  };
}

describe("authentication", () => {
  it("refuses a missing or unknown key with a 401 in OpenAI's format, and never on /health and /ready", async () => {
    const none = await api("GET", "/v1/atlas/memory", { key: null });
    expect(none.status).toBe(401);
    expect(none.json).toEqual({
      error: { message: expect.any(String), type: "authentication_error", param: null, code: "invalid_api_key" },
    });
    const wrong = await api("GET", "/v1/atlas/memory", { key: "not-a-real-key" });
    expect(wrong.status).toBe(401);
    expect(JSON.stringify(wrong.json)).not.toContain("not-a-real-key");
    expect((await api("POST", "/v1/chat/completions", { key: null, body: {} })).status).toBe(401);
    expect((await api("GET", "/health", { key: null })).status).toBe(200);
    expect((await api("GET", "/ready", { key: null })).status).not.toBe(401);
  });
});

describe("PUT and GET /v1/atlas/memory/{session_id}", () => {
  it("creates (201), reads back the version 1 document of the caller's tenant, and replaces (200)", async () => {
    const put = await api("PUT", "/v1/atlas/memory/crud:one.1", { body: doc(2) });
    expect(put.status).toBe(201);
    expect(put.json).toMatchObject({ object: "atlas.memory.session", id: "crud:one.1", layers: 2, model: "atlas-tiny" });
    const get = await api("GET", "/v1/atlas/memory/crud:one.1");
    expect(get.status).toBe(200);
    expect(get.json).toMatchObject({
      version: 1,
      session_id: "crud:one.1",
      tenant: "alpha",
      model: "atlas-tiny",
      metadata: { topic: "tests" },
    });
    expect(get.json.layers.map((l: { id: string }) => l.id)).toEqual(["l1", "l2"]);
    expect(get.json.layers[0]).toMatchObject({
      messages: [
        { role: "user", content: "hello 1" },
        { role: "assistant", content: "reply 1" },
      ],
    });
    expect(get.headers.get("etag")).toBe(`"${put.json.revision}"`);
    const again = await api("PUT", "/v1/atlas/memory/crud:one.1", { body: doc(3) });
    expect(again.status).toBe(200);
    expect((await api("GET", "/v1/atlas/memory/crud:one.1")).json.layers).toHaveLength(3);
  });

  it("honours If-Match: a stale revision is a 412, the current one writes", async () => {
    const put = await api("PUT", "/v1/atlas/memory/crud-etag", { body: doc(1) });
    const rev = put.json.revision as number;
    expect((await api("PUT", "/v1/atlas/memory/crud-etag", { body: doc(2), headers: { "if-match": `"${rev}"` } })).status).toBe(200);
    const stale = await api("PUT", "/v1/atlas/memory/crud-etag", { body: doc(3), headers: { "if-match": `"${rev}"` } });
    expect(stale.status).toBe(412);
    expect(stale.json.error).toMatchObject({ code: "revision_mismatch" });
  });

  it("round-trips a 2 MB document", async () => {
    const big = doc(4, "z".repeat(512 * 1024));
    const put = await api("PUT", "/v1/atlas/memory/crud-big", { body: big });
    expect(put.status).toBe(201);
    expect(put.json.bytes).toBeGreaterThan(2 * 1024 * 1024);
    const get = await api("GET", "/v1/atlas/memory/crud-big");
    expect(get.status).toBe(200);
    expect(get.json.layers).toEqual(big.layers.map((l) => ({ ...l, created_at: expect.any(String) })));
  });

  it("answers an invalid document with a 400 that names the field", async () => {
    const cases: [unknown, string][] = [
      [{ ...doc(1), version: 2 }, "version"],
      [(({ version: _, ...rest }) => rest)(doc(1)), "version"],
      [{ ...doc(1), colour: "red" }, ""],
      [{ ...doc(1), layers: [{ messages: [{ role: "robot", content: "x" }] }] }, "layers[0].messages[0].role"],
      [{ ...doc(1), layers: [{ messages: [] }] }, "layers[0].messages"],
      [
        {
          ...doc(1),
          layers: [
            { id: "same", messages: [{ role: "user", content: "a" }] },
            { id: "same", messages: [{ role: "user", content: "b" }] },
          ],
        },
        "layers[1].id",
      ],
      [{ ...doc(1), created_at: "yesterday" }, "created_at"],
      [{ ...doc(1), session_id: "another" }, "session_id"],
      [{ ...doc(1), tenant: "beta" }, "tenant"],
    ];
    for (const [body, param] of cases) {
      const r = await api("PUT", "/v1/atlas/memory/crud-invalid", { body });
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(r.json.error.type).toBe("invalid_request_error");
      if (param !== "") expect(r.json.error.param).toBe(param);
    }
    expect((await api("PUT", "/v1/atlas/memory/crud-invalid", { raw: "{not json" })).status).toBe(400);
    expect((await api("PUT", "/v1/atlas/memory/crud-invalid", { body: [1, 2] })).status).toBe(400);
    expect((await api("GET", "/v1/atlas/memory/crud-invalid")).status).toBe(404); // nothing was written
  });

  it("takes a 128-character session id and refuses a malformed one in the URL", async () => {
    const longest = "a".repeat(127) + ".";
    expect((await api("PUT", `/v1/atlas/memory/${longest}`, { body: doc(1) })).status).toBe(201);
    expect((await api("GET", `/v1/atlas/memory/${longest}`)).json.session_id).toBe(longest);
    for (const id of ["bad%20id", "a".repeat(129), "semi%3Bcolon"]) {
      const r = await api("GET", `/v1/atlas/memory/${id}`);
      expect(r.status, id).toBe(400);
      expect(r.json.error.param).toBe("session_id");
    }
  });
});

describe("GET /v1/atlas/memory", () => {
  it("lists the caller's sessions in pages", async () => {
    for (const id of ["page-1", "page-2", "page-3", "page-4", "page-5"]) {
      expect((await api("PUT", `/v1/atlas/memory/${id}`, { key: BETA, body: doc(1) })).status).toBe(201);
    }
    const first = await api("GET", "/v1/atlas/memory?limit=2", { key: BETA });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ object: "list", has_more: true, first_id: "page-1", last_id: "page-2" });
    expect(first.json.data[0]).toMatchObject({ object: "atlas.memory.session", id: "page-1", layers: 1 });
    const rest = await api("GET", `/v1/atlas/memory?limit=10&after=${first.json.last_id}`, { key: BETA });
    expect(rest.json.data.map((s: { id: string }) => s.id)).toEqual(["page-3", "page-4", "page-5"]);
    expect(rest.json.has_more).toBe(false);
    expect((await api("GET", "/v1/atlas/memory?limit=0", { key: BETA })).json.error.param).toBe("limit");
    expect((await api("GET", "/v1/atlas/memory?limit=101", { key: BETA })).status).toBe(400);
  });
});

describe("tenant isolation", () => {
  it("never shows one tenant's session to another: 404 exactly like a missing one", async () => {
    await api("PUT", "/v1/atlas/memory/private-1", { body: doc(2, "alpha secret") });
    const other = await api("GET", "/v1/atlas/memory/private-1", { key: BETA });
    const missing = await api("GET", "/v1/atlas/memory/private-never", { key: BETA });
    expect(other.status).toBe(404);
    expect(other.json.error).toMatchObject({ type: "not_found_error", code: "session_not_found" });
    expect(JSON.stringify(other.json)).not.toContain("alpha secret");
    expect(other.json.error.message.replace("private-1", "X")).toBe(missing.json.error.message.replace("private-never", "X"));
    const list = await api("GET", "/v1/atlas/memory?limit=100", { key: BETA });
    expect(list.json.data.map((s: { id: string }) => s.id)).not.toContain("private-1");
    expect((await api("DELETE", "/v1/atlas/memory/private-1", { key: BETA })).status).toBe(404);
    expect(
      (await api("POST", "/v1/atlas/memory/private-1/layers", { key: BETA, body: { messages: [{ role: "user", content: "beta" }] } }))
        .status,
    ).toBe(202);
    // Beta's append made beta's own session; alpha's is untouched.
    await expect
      .poll(async () => (await api("GET", "/v1/atlas/memory/private-1", { key: BETA })).json.layers?.length, { timeout: 5000 })
      .toBe(1);
    const alpha = await api("GET", "/v1/atlas/memory/private-1");
    expect(alpha.json.layers.map((l: { id: string }) => l.id)).toEqual(["l1", "l2"]);
  });
});

describe("POST /v1/atlas/memory/{session_id}/layers", () => {
  it("appends, once per layer id", async () => {
    await api("PUT", "/v1/atlas/memory/crud-append", { body: doc(1) });
    const layer = {
      id: "client-7",
      messages: [
        { role: "user", content: "more" },
        { role: "assistant", content: "sure" },
      ],
    };
    const first = await api("POST", "/v1/atlas/memory/crud-append/layers", { body: layer });
    expect(first.status).toBe(202);
    expect(first.json).toEqual({ object: "atlas.memory.layer", id: "client-7", session_id: "crud-append", status: "stored" });
    expect((await api("POST", "/v1/atlas/memory/crud-append/layers", { body: layer })).status).toBe(202);
    const generated = await api("POST", "/v1/atlas/memory/crud-append/layers", { body: { messages: [{ role: "user", content: "x" }] } });
    expect(generated.json.id).toMatch(/^layer_/);
    // Stored when answered: the layers are there at once.
    const get = await api("GET", "/v1/atlas/memory/crud-append");
    expect(get.json.layers.map((l: { id: string }) => l.id)).toEqual(["l1", "client-7", generated.json.id]);
    expect((await api("POST", "/v1/atlas/memory/crud-append/layers", { body: { messages: [] } })).json.error.param).toBe("messages");
  });
});

describe("large payloads", () => {
  it("appends a layer larger than a NATS message, and recalls it", async () => {
    const huge = "h".repeat(1536 * 1024);
    const r = await api("POST", "/v1/atlas/memory/crud-huge/layers", {
      body: { id: "huge-1", messages: [{ role: "user", content: huge }] },
    });
    expect(r.status).toBe(202);
    expect(r.json.status).toBe("stored");
    const small = await api("POST", "/v1/atlas/memory/crud-huge/layers", {
      body: { id: "small-2", messages: [{ role: "user", content: "x" }] },
    });
    expect(small.json.status).toBe("stored");
    const get = await api("GET", "/v1/atlas/memory/crud-huge");
    expect(get.json.layers.map((l: { id: string }) => l.id)).toEqual(["huge-1", "small-2"]);
    expect(get.json.layers[0].messages[0].content).toBe(huge);
  });
});

describe("an append's cost", () => {
  it("writes one small record into the session log, the same at layer 2 and at layer 50", async () => {
    const nc = await connect({ servers: stack.nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      const names = memoryNames(stack.config.ATLAS_NATS_PREFIX);
      const bytes = async () => ({
        log: (await jsm.streams.info(names.log)).state.bytes,
        kv: (await jsm.streams.info(`KV_${names.kv}`)).state.bytes,
      });
      const written: Record<number, { log: number; kv: number }> = {};
      for (let n = 1; n <= 50; n++) {
        const before = await bytes();
        const id = `g-${String(n).padStart(2, "0")}`;
        const r = await api("POST", "/v1/atlas/memory/grow/layers", {
          body: { id, messages: [{ role: "user", content: "the same size every time" }] },
        });
        expect(r.json.status).toBe("stored");
        const after = await bytes();
        written[n] = { log: after.log - before.log, kv: after.kv - before.kv };
      }
      const doc = await api("GET", "/v1/atlas/memory/grow");
      expect(doc.json.layers).toHaveLength(50);
      expect(written[2]?.kv).toBe(0);
      expect(written[50]?.kv).toBe(0);
      expect(written[50]?.log).toBe(written[2]?.log); // independent of the session's length
      expect(written[50]?.log).toBeLessThan(JSON.stringify(doc.json).length / 10); // not a rewrite of the document
    } finally {
      await nc.close();
    }
  });
});

describe("DELETE /v1/atlas/memory/{session_id}", () => {
  it("deletes, then answers 404 to GET and DELETE", async () => {
    await api("PUT", "/v1/atlas/memory/crud-delete", { body: doc(1) });
    const del = await api("DELETE", "/v1/atlas/memory/crud-delete");
    expect(del.status).toBe(200);
    expect(del.json).toEqual({ id: "crud-delete", object: "atlas.memory.session.deleted", deleted: true });
    expect((await api("GET", "/v1/atlas/memory/crud-delete")).status).toBe(404);
    expect((await api("DELETE", "/v1/atlas/memory/crud-delete")).status).toBe(404);
  });
});

describe("persistence out of reach", () => {
  it("answers 503 with Retry-After, still takes appends durably, and applies them when it is back", async () => {
    await stack.stop("persistence");
    const get = await api("GET", "/v1/atlas/memory/crud:one.1");
    expect(get.status).toBe(503);
    expect(get.headers.get("retry-after")).toBe("2");
    expect(get.json.error).toMatchObject({ type: "server_error", code: "memory_unavailable" });
    expect((await api("GET", "/v1/atlas/memory")).status).toBe(503);
    expect((await api("PUT", "/v1/atlas/memory/crud-down", { body: doc(1) })).status).toBe(503);
    expect((await api("DELETE", "/v1/atlas/memory/crud:one.1")).status).toBe(503);
    const append = await api("POST", "/v1/atlas/memory/crud:one.1/layers", {
      body: { id: "while-down", messages: [{ role: "user", content: "x" }] },
    });
    expect(append.status).toBe(202);
    await stack.start("persistence");
    // Persistence's circuit breaker opened while it was away: until a probe sees it back (within a
    // second under traffic) a call still gets the 503 with Retry-After, as a client honours it.
    await expect.poll(async () => (await api("GET", "/v1/atlas/memory/crud:one.1")).status, { timeout: 10_000, interval: 200 }).toBe(200);
    const after = await api("GET", "/v1/atlas/memory/crud:one.1");
    expect(after.json.layers.map((l: { id: string }) => l.id)).toEqual(["l1", "l2", "l3", "while-down"]);
  });
});

describe("restarts", () => {
  it("keeps every acknowledged append through a persistence restart and a nats-server crash", async () => {
    const ids = ["r-1", "r-2", "r-3"];
    for (const id of ids) {
      const r = await api("POST", "/v1/atlas/memory/restart-me/layers", { body: { id, messages: [{ role: "user", content: id }] } });
      expect(r.status).toBe(202);
      expect(r.json.status).toBe("stored"); // acknowledged by persistence: in the log, on file storage
    }
    await stack.stop("persistence");
    await stack.restartNats({ crash: true });
    await stack.start("persistence");
    await expect.poll(async () => (await api("GET", "/v1/atlas/memory/restart-me")).status, { timeout: 15_000, interval: 200 }).toBe(200);
    const after = await api("GET", "/v1/atlas/memory/restart-me");
    expect(after.json.layers.map((l: { id: string }) => l.id)).toEqual(ids);
  });
});
