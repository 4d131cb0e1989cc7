/**
 * NATS permissions: the configuration generated from `libs/contracts/src/service_permissions/<name>.ts` is the
 * one compose mounts, nats-server accepts it, a whole request path runs under it without one
 * refusal, and a service that steps outside its declared subjects is refused by the server.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BusError } from "@atlas/bus";
import { LeaseAcquire, MemoryDeleted, MemoryGet, WorkerControl } from "@atlas/contracts";
import { composeNatsConfig, deploymentPermissions, passwordVariable } from "@atlas/supervisor";
import { startNatsServer } from "@atlas/testing";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO, type Stack, startStack } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
/** The users of deploy/nats/atlas.conf: four services and the workers' pool `worker-1`…`worker-16`. */
const USERS = deploymentPermissions("atlas").map((p) => p.service);
let stack: Stack;

beforeAll(async () => {
  stack = await startStack(); // all five services, each as its own NATS user
});
afterAll(async () => stack?.close());

function bus(key: "api" | "worker" | "metrics" | "persistence" | "scheduler") {
  const b = stack.running.get(key)?.[0]?.bus;
  if (b === undefined) throw new Error(`${key} is not running`);
  return b;
}

describe("the generated configuration", () => {
  it("is what deploy/nats/atlas.conf holds (regenerate with npm run nats-config)", async () => {
    const committed = readFileSync(join(REPO, "deploy/nats/atlas.conf"), "utf8");
    expect(committed).toBe(await composeNatsConfig("atlas"));
  });

  it("is accepted by nats-server, which refuses to start when a password is missing", () => {
    const file = join(REPO, "deploy/nats/atlas.conf");
    expect(USERS).toContain("worker-16");
    expect(USERS).not.toContain("inference-worker"); // no shared worker user in a deployment
    const env = Object.fromEntries(USERS.map((s) => [passwordVariable(s), `pw-${s}`]));
    const ok = spawnSync("nats-server", ["-c", file, "-t"], { env: { ...process.env, ...env }, encoding: "utf8" });
    expect(ok.status, ok.stderr).toBe(0);
    const { ATLAS_NATS_PASSWORD_API: _, ...missing } = env;
    const bad = spawnSync("nats-server", ["-c", file, "-t"], { env: { PATH: process.env.PATH ?? "", ...missing }, encoding: "utf8" });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain("ATLAS_NATS_PASSWORD_API");
  });

  it("admits each service only with its own password, and nobody without one", async () => {
    const passwords = Object.fromEntries(USERS.map((s) => [s, `secret-${s}-0123456789`]));
    const text = (await composeNatsConfig("atlas")).replace(
      /password: \$ATLAS_NATS_PASSWORD_([A-Z0-9_]+)/g,
      (_m, v: string) => `password: "secret-${v.toLowerCase().replaceAll("_", "-")}-0123456789"`,
    );
    await using server = await startNatsServer({ config: text });
    const api = await connect({ servers: server.url, user: "api", pass: passwords.api ?? "" });
    await api.flush();
    await api.close();
    const worker = await connect({ servers: server.url, user: "worker-3", pass: passwords["worker-3"] ?? "" });
    await worker.flush();
    await worker.close();
    await expect(connect({ servers: server.url, user: "worker-3", pass: passwords["worker-4"] ?? "" })).rejects.toThrow(/authorization/i);
    await expect(connect({ servers: server.url, user: "api", pass: "wrong" })).rejects.toThrow(/authorization/i);
    await expect(connect({ servers: server.url })).rejects.toThrow(/authorization/i);
  });
});

describe("a stack under the generated permissions", () => {
  it("serves chat with memory, leases and metrics without a single refusal", async () => {
    const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: MODEL,
        messages: [{ role: "user", content: "Hello" }],
        max_tokens: 8,
        stream: true,
        atlas: { session_id: "perm-1" },
      }),
    });
    expect(res.status).toBe(200);
    await res.text();
    await expect
      .poll(async () => (await fetch(`${stack.baseUrl}/v1/atlas/memory/perm-1`)).status, { timeout: 10_000, interval: 200 })
      .toBe(200);
    const status = (await (await fetch(`${stack.baseUrl}/v1/atlas/status`)).json()) as { status: string };
    expect(status.status).toBe("ok");
    await expect.poll(async () => (await fetch(`${stack.baseUrl}/metrics`)).status, { timeout: 10_000 }).toBe(200);
    expect(stack.violations()).toEqual([]);
  });

  it("refuses a service that publishes, requests or subscribes outside its declared subjects", async () => {
    const api = bus("api");
    // Provoked on purpose below: exactly these refusals may pass `stack.close()` (any other fails it).
    const provoked = [
      [`Publish Violation - User "api"`, MemoryDeleted.subject(api.prefix)],
      [`Publish Violation - User "worker-1"`, LeaseAcquire.subject(api.prefix)],
      [`Publish Violation - User "worker-1"`, MemoryGet.subject(api.prefix)],
      [`Subscription Violation - User "metrics"`, MemoryGet.subject(api.prefix)],
      [`Publish Violation - User "metrics"`, WorkerControl.subject(api.prefix, { workerId: "worker-1" })],
    ];
    stack.allowViolations((line) => provoked.some(([who, subject]) => line.includes(who ?? "") && line.includes(`"${subject}"`)));
    const errors: string[] = [];
    void (async () => {
      for await (const s of api.nc.status()) if (s.type === "error") errors.push(String((s as { error?: Error }).error?.message));
    })();
    // Only persistence announces deletions: the api may not.
    api.publish(MemoryDeleted, { tenant: "default", session_id: "x", deleted_at: new Date().toISOString() });
    await api.nc.flush();
    await expect.poll(() => stack.violations().join("\n"), { timeout: 5000 }).toContain(`Publish Violation - User "api"`);
    expect(stack.violations().join("\n")).toContain(MemoryDeleted.subject(api.prefix));
    await expect.poll(() => errors.join("\n"), { timeout: 5000 }).toMatch(/Permissions Violation for Publish/);

    // A worker (worker-1, its own NATS user) may not impersonate the scheduler (lease requests) or ask persistence for memory.
    const worker = bus("worker");
    const call = worker.call(LeaseAcquire, {
      request_id: "r",
      holder: "h",
      tenant: "default",
      model: MODEL,
      session: null,
      count: 1,
      strategy: "lru",
      wait_ms: 0,
      ttl_ms: 1000,
    });
    await expect(call).rejects.toBeInstanceOf(BusError);
    await expect(call).rejects.toMatchObject({ code: "internal", retryable: false, message: expect.stringMatching(/Not permitted/) });
    await expect(worker.call(MemoryGet, { tenant: "default", session_id: "x" })).rejects.toMatchObject({ code: "internal" });

    // Metrics may not listen to the api's requests to persistence, nor send workers commands.
    const sub = bus("metrics").nc.subscribe(MemoryGet.subject(api.prefix));
    await expect(sub.closed).resolves.toBeInstanceOf(Error);
    bus("metrics").publish(WorkerControl, { type: "drain" }, { workerId: "worker-1" });
    await expect.poll(() => stack.violations().filter((v) => v.includes(`User "metrics"`)).length, { timeout: 5000 }).toBe(2);
    const refused = stack.violations().join("\n");
    expect(refused).toContain(`Subscription Violation - User "metrics"`);
    expect(refused).toContain(`Publish Violation - User "metrics"`);
    expect(refused).toContain(`Publish Violation - User "worker-1"`);

    // Refused operations leave the services working.
    const res = await fetch(`${stack.baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "Still", max_tokens: 2 }),
    });
    expect(res.status).toBe(200);
  });
});
