/**
 * The backbone across services: discovery finds every service, and the status endpoint says
 * `ok` with all five up and `degraded` when one is stopped.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => stack?.close());

async function status() {
  const res = await fetch(`${stack.baseUrl}/v1/atlas/status`);
  expect(res.status).toBe(200);
  return (await res.json()) as {
    status: string;
    missing: string[];
    nats: { connected: boolean; server_version: string; rtt_ms: number };
    services: Record<string, { instance: string; healthy: boolean; version: string; uptime_s: number }[]>;
  };
}

describe("discovery", () => {
  it("finds an instance of every service, and only this cluster's", async () => {
    const bus = stack.running.get("api")?.[0]?.bus;
    const found = await bus?.discover();
    expect(new Set(found?.map((i) => i.name))).toEqual(new Set(["api", "inference-worker", "metrics", "persistence", "scheduler"]));
  });
});

describe("GET /v1/atlas/status", () => {
  it("reports every service healthy, the NATS version and round trip, and ok", async () => {
    const s = await status();
    expect(s.status).toBe("ok");
    expect(s.missing).toEqual([]);
    expect(s.nats.connected).toBe(true);
    expect(s.nats.server_version).toMatch(/^\d+\.\d+\.\d+/);
    expect(s.nats.rtt_ms).toBeGreaterThanOrEqual(0);
    for (const name of ["api", "inference-worker", "metrics", "persistence", "scheduler"]) {
      expect(s.services[name]?.length, name).toBe(1);
      expect(s.services[name]?.[0]).toMatchObject({ healthy: true, version: "0.1.0" });
    }
    expect(s.services["inference-worker"]?.[0]?.instance).toBe("worker-1");
  });

  it("says degraded and names the service when one is stopped, and ok again when it is back", async () => {
    await stack.stop("persistence");
    const s = await status();
    expect(s.status).toBe("degraded");
    expect(s.missing).toEqual(["persistence"]);
    await stack.start("persistence");
    expect((await status()).status).toBe("ok");
  });

  it("says down when no worker is left", async () => {
    await stack.stop("worker");
    const s = await status();
    expect(s.status).toBe("down");
    expect(s.missing).toContain("inference-worker");
    const ready = await fetch(`${stack.baseUrl}/ready`);
    expect(ready.status).toBe(503);
  });
});

describe("a worker whose model cannot load", () => {
  it("reports the reason in status and stays out of rotation", async () => {
    const bad = join(stack.nats.storeDir, "broken.gguf");
    await writeFile(bad, "GGUF but not really a model");
    await stack.start("worker", { ATLAS_MODEL: bad, ATLAS_WORKER_ID: "broken" });
    const s = await status();
    const broken = s.services["inference-worker"]?.find((w) => w.instance === "broken") as unknown as {
      healthy: boolean;
      checks: Record<string, { ok: boolean; detail?: string }>;
    };
    expect(broken.healthy).toBe(false);
    expect(broken.checks.model?.ok).toBe(false);
    expect(broken.checks.model?.detail).toMatch(/broken\.gguf|GGUF|magic|invalid/i);
    // The stopped worker leaves the api's model list once two discovery rounds in a row missed it
    // (`services/api/src/catalog.ts`); the broken one never enters it.
    const models = async () => ((await (await fetch(`${stack.baseUrl}/v1/models`)).json()) as { data: unknown[] }).data;
    await expect.poll(models, { timeout: 15_000 }).toEqual([]);
  });
});

describe("HTTP basics", () => {
  it("answers /health, carries x-request-id, and keeps a sane client request id", async () => {
    const res = await fetch(`${stack.baseUrl}/health`, { headers: { "x-request-id": "abc-123" } });
    expect(await res.json()).toEqual({ status: "ok" });
    expect(res.headers.get("x-request-id")).toBe("abc-123");
    const other = await fetch(`${stack.baseUrl}/health`, { headers: { "x-request-id": "bad id with spaces" } });
    expect(other.headers.get("x-request-id")).toMatch(/^req_/);
  });

  it("answers unknown URLs, invalid JSON and oversized bodies in OpenAI's error format", async () => {
    const unknown = await fetch(`${stack.baseUrl}/v1/nothing`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { type: "not_found_error", code: "unknown_url", param: null } });

    const badJson = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"model": "x", "messages": [',
    });
    expect(badJson.status).toBe(400);
    expect(await badJson.json()).toMatchObject({ error: { type: "invalid_request_error", code: "invalid_json" } });

    const huge = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "x", messages: [{ role: "user", content: "a".repeat(9 * 1024 * 1024) }] }),
    });
    expect(huge.status).toBe(413);
    expect(await huge.json()).toMatchObject({ error: { code: "request_too_large" } });
  });

  it("refuses unknown atlas options and unknown arguments with a 400 naming them", async () => {
    const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "atlas-tiny", messages: [{ role: "user", content: "x" }], atlas: { session_id: "s-1", turbo: true } }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { message: string; param: string } };
    expect(body.error.message).toContain("turbo");
    expect(body.error.param).toBe("atlas");
    const bad = await fetch(`${stack.baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "atlas-tiny", prompt: "x", frobnicate: 1 }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain("frobnicate");
  });
});
