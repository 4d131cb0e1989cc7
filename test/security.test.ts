/**
 * Keys, tenants and the audit trail against a real cluster with three keys: two tenants and an
 * admin. Every refusal in OpenAI's format; cluster operations need the admin key (403
 * otherwise); the metrics stream and the dashboard take the key as `?access_token=` and nothing
 * else does; no tenant reads, lists, overwrites or deletes another's sessions; every memory
 * operation and every refusal is an audit record; no key and no message content ever reaches a
 * log line; a kept-alive connection stays usable after a streamed response.
 */
import { Agent, request as httpRequest, type IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { createLogger } from "@atlas/log";
import { announceReady } from "@atlas/supervisor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSse } from "./helpers/sse.ts";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const ALPHA = "alpha-key-0001-secret";
const BETA = "beta-key-0002-secret";
const ADMIN = "ops-key-0003-secret";
const SECRET_TEXT = "TOP-SECRET-CONTENT-7731";
const logs: string[] = [];
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({
    services: ["metrics", "persistence", "worker", "api"],
    env: { ATLAS_API_KEYS: `${ALPHA}:alpha,${BETA}:beta,${ADMIN}:ops:admin` },
    logDestination: { write: (line) => void logs.push(line) },
  });
  await waitFor(async () => (await api("GET", "/v1/models", { key: ADMIN })).json.data?.length === 1, { what: "the model catalog" });
}, 60_000);
afterAll(async () => stack?.close());

interface Options {
  key?: string | null;
  body?: unknown;
}

async function api(method: string, path: string, o: Options = {}) {
  const headers: Record<string, string> = {};
  const key = o.key === undefined ? ALPHA : o.key;
  if (key !== null) headers.authorization = `Bearer ${key}`;
  if (o.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${stack.baseUrl}${path}`, {
    method,
    headers,
    ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: checked with matchers
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, json, text };
}

function audits(): Record<string, unknown>[] {
  return logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.audit !== undefined);
}

const openAiError = (type: string, code: string) => ({ error: { message: expect.any(String), type, param: null, code } });

describe("keys", () => {
  it("refuses a missing or unknown key with a 401 everywhere but the probes and the dashboard's static files", async () => {
    for (const path of ["/v1/models", "/v1/atlas/status", "/v1/atlas/memory", "/metrics", "/v1/atlas/metrics", "/dashboard"]) {
      const none = await api("GET", path, { key: null });
      expect(none.status, path).toBe(401);
      expect(none.json).toEqual(openAiError("authentication_error", "invalid_api_key"));
      expect((await api("GET", path, { key: "not-a-key-at-all" })).status, path).toBe(401);
    }
    expect((await api("POST", "/v1/chat/completions", { key: null, body: {} })).status).toBe(401);
    for (const path of ["/health", "/ready", "/dashboard/dashboard.js", "/dashboard/vendor/uPlot.min.css"]) {
      expect((await api("GET", path, { key: null })).status, path).not.toBe(401);
    }
    const denied = audits().filter((a) => a.audit === "auth.denied");
    expect(denied.length).toBeGreaterThanOrEqual(13);
    expect(denied[0]).toMatchObject({ outcome: "denied", tenant: null, request_id: expect.any(String), reason: "missing_key" });
    expect(denied.some((a) => a.reason === "invalid_key")).toBe(true);
  });

  it("needs an admin key for cluster operations: a tenant key gets a 403", async () => {
    const tenantStatus = await api("GET", "/v1/atlas/status");
    expect(tenantStatus.status).toBe(200);
    expect(Object.keys(tenantStatus.json).sort()).toEqual(["checked_at", "status", "version"]);
    const adminStatus = await api("GET", "/v1/atlas/status", { key: ADMIN });
    expect(adminStatus.json.services).toBeDefined();
    expect(adminStatus.json.api.breakers.map((b: { name: string }) => b.name)).toEqual(
      expect.arrayContaining(["scheduler", "persistence", "metrics"]),
    );
    expect(adminStatus.json.api.admission).toMatchObject({ max_concurrent: 32, running: 0 });

    for (const [method, path] of [
      ["POST", "/v1/atlas/workers/worker-1/drain"],
      ["GET", "/v1/atlas/metrics"],
      ["GET", "/metrics"],
      ["GET", "/v1/atlas/metrics/stream"],
      ["GET", "/dashboard"],
      ["GET", "/v1/atlas/memory?tenant=beta"],
    ] as const) {
      const r = await api(method, path);
      expect(r.status, path).toBe(403);
      expect(r.json).toEqual(openAiError("permission_error", "admin_required"));
    }
    await waitFor(async () => (await api("GET", "/metrics", { key: ADMIN })).status === 200, { what: "metrics" });
    expect((await api("GET", "/v1/atlas/metrics", { key: ADMIN })).status).toBe(200);
    expect(audits().filter((a) => a.audit === "auth.forbidden" && a.tenant === "alpha").length).toBeGreaterThanOrEqual(6);
  });

  it("takes ?access_token= on the metrics stream and the dashboard only", async () => {
    const ok = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream?access_token=${ADMIN}`);
    expect(ok.status).toBe(200);
    expect((await ok.next(5000)).event).toBe("snapshot");
    ok.close();
    const tenant = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream?access_token=${ALPHA}`);
    expect(tenant.status).toBe(403);
    tenant.close();
    const page = await fetch(`${stack.baseUrl}/dashboard?access_token=${ADMIN}`);
    expect(page.status).toBe(200);
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    await page.text();
    // Anywhere else a token in the URL is no key at all.
    expect((await api("GET", `/v1/models?access_token=${ADMIN}`, { key: null })).status).toBe(401);
    expect((await api("GET", `/metrics?access_token=${ADMIN}`, { key: null })).status).toBe(401);
  });

  it("lets the supervisor's ready check say so when the model list needs a key (/ready stays open)", async () => {
    const bus = stack.running.get("api")?.[0]?.bus;
    const lines: string[] = [];
    const log = createLogger({ service: "supervisor-test", destination: { write: (line) => void lines.push(line) } });
    const done = new AbortController();
    const ready = announceReady({ bus: () => bus, log, signal: done.signal });
    try {
      await expect.poll(() => lines.length, { timeout: 15_000 }).toBeGreaterThan(0);
      await ready;
    } finally {
      done.abort();
    }
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? "{}").msg).toBe(`Ready: ${stack.baseUrl} (its model list needs an API key)`);
  });
});

describe("tenant isolation", () => {
  const doc = (text: string) => ({ version: 1, layers: [{ id: "l1", messages: [{ role: "user", content: text }] }] });

  it("keeps every tenant to its own sessions: read, list, overwrite, delete, recall", async () => {
    expect((await api("PUT", "/v1/atlas/memory/shared-name", { body: doc(`alpha ${SECRET_TEXT}`) })).status).toBe(201);
    // Read and delete: another tenant's session is a 404 exactly like a missing one.
    const read = await api("GET", "/v1/atlas/memory/shared-name", { key: BETA });
    expect(read.status).toBe(404);
    expect(read.text).not.toContain(SECRET_TEXT);
    expect((await api("DELETE", "/v1/atlas/memory/shared-name", { key: BETA })).status).toBe(404);
    // List: not there.
    const list = await api("GET", "/v1/atlas/memory?limit=100", { key: BETA });
    expect(list.json.data.map((s: { id: string }) => s.id)).not.toContain("shared-name");
    // Overwrite: beta's PUT makes beta's own session; alpha's is untouched.
    expect((await api("PUT", "/v1/atlas/memory/shared-name", { key: BETA, body: doc("beta's own") })).status).toBe(201);
    const alphas = await api("GET", "/v1/atlas/memory/shared-name");
    expect(alphas.json.layers[0].messages[0].content).toBe(`alpha ${SECRET_TEXT}`);
    expect((await api("GET", "/v1/atlas/memory/shared-name", { key: BETA })).json.layers[0].messages[0].content).toBe("beta's own");
    // Naming another tenant is for admins: a 403 for a tenant key, and the right data for the admin.
    expect((await api("GET", "/v1/atlas/memory/shared-name?tenant=alpha", { key: BETA })).status).toBe(403);
    expect((await api("DELETE", "/v1/atlas/memory/shared-name?tenant=alpha", { key: BETA })).status).toBe(403);
    const asAdmin = await api("GET", "/v1/atlas/memory/shared-name?tenant=alpha", { key: ADMIN });
    expect(asAdmin.json.tenant).toBe("alpha");
    // Recall: beta's chat in a session of the same name never sees alpha's history.
    const chat = (key: string) =>
      api("POST", "/v1/chat/completions", {
        key,
        body: { model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 2, atlas: { session_id: "recall-x" } },
      });
    await api("PUT", "/v1/atlas/memory/recall-x", { body: doc(`${"history ".repeat(50)}${SECRET_TEXT}`) });
    const alphaChat = await chat(ALPHA);
    const betaChat = await chat(BETA);
    expect(alphaChat.status).toBe(200);
    expect(betaChat.json.usage.prompt_tokens).toBeLessThan(alphaChat.json.usage.prompt_tokens - 40);
    // Alpha deletes its own; beta's same-named session survives.
    expect((await api("DELETE", "/v1/atlas/memory/shared-name")).status).toBe(200);
    expect((await api("GET", "/v1/atlas/memory/shared-name", { key: BETA })).status).toBe(200);
  });
});

describe("audit trail", () => {
  it("records every memory read, list, import, write and delete with tenant, session, request id and outcome", async () => {
    const before = audits().length;
    await api("PUT", "/v1/atlas/memory/audited", { body: doc2() });
    await api("POST", "/v1/atlas/memory/audited/layers", { body: { id: "a2", messages: [{ role: "user", content: SECRET_TEXT }] } });
    await api("GET", "/v1/atlas/memory/audited");
    await api("GET", "/v1/atlas/memory");
    await api("GET", "/v1/atlas/memory/audited", { key: BETA });
    await api("DELETE", "/v1/atlas/memory/audited");
    const records = audits().slice(before);
    const pick = (event: string) => records.filter((r) => r.audit === event);
    expect(pick("memory.import")[0]).toMatchObject({ tenant: "alpha", session: "audited", outcome: "ok", request_id: expect.any(String) });
    expect(pick("memory.write")[0]).toMatchObject({ tenant: "alpha", session: "audited", outcome: "ok", layer: "a2" });
    expect(pick("memory.read").map((r) => `${r.tenant}:${r.outcome}`)).toEqual(["alpha:ok", "beta:not_found"]);
    expect(pick("memory.list")[0]).toMatchObject({ tenant: "alpha", outcome: "ok", session: null });
    expect(pick("memory.delete")[0]).toMatchObject({ tenant: "alpha", session: "audited", outcome: "ok" });
    const ids = new Set(records.map((r) => r.request_id));
    expect(ids.size).toBe(records.length);
  });

  it("never writes a key or message content to the log", () => {
    const all = logs.join("\n");
    expect(all.length).toBeGreaterThan(1000);
    for (const secret of [ALPHA, BETA, ADMIN, SECRET_TEXT]) expect(all).not.toContain(secret);
  });
});

function doc2() {
  return { version: 1, layers: [{ id: "a1", messages: [{ role: "user", content: SECRET_TEXT }] }] };
}

describe("connections", () => {
  it("keeps a kept-alive connection usable after a streamed response", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const url = new URL(stack.baseUrl);
    const send = (body: unknown) =>
      new Promise<{ res: IncomingMessage; text: string; socket: Socket; reused: boolean }>((resolve, reject) => {
        const req = httpRequest(
          {
            host: url.hostname,
            port: url.port,
            path: "/v1/chat/completions",
            method: "POST",
            agent,
            headers: { authorization: `Bearer ${ALPHA}`, "content-type": "application/json" },
          },
          (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => {
              text += c;
            });
            res.on("end", () => resolve({ res, text, socket: req.socket as Socket, reused: req.reusedSocket }));
          },
        );
        req.on("error", reject);
        req.end(JSON.stringify(body));
      });
    const messages = [{ role: "user", content: "Keep me alive" }];
    const streamed = await send({ model: MODEL, messages, max_tokens: 8, stream: true });
    expect(streamed.res.statusCode).toBe(200);
    expect(streamed.text.trim().endsWith("data: [DONE]")).toBe(true);
    for (let i = 0; i < 3; i++) {
      const next = await send({ model: MODEL, messages, max_tokens: 4, stream: i % 2 === 0 });
      expect(next.res.statusCode).toBe(200);
      expect(next.reused).toBe(true);
      expect(next.socket).toBe(streamed.socket);
    }
    agent.destroy();
  });
});
