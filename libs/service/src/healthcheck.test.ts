import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Bus } from "@atlas/bus";
import { loadConfig } from "@atlas/config";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkServiceHealth } from "./healthcheck.ts";

const SCRIPT = fileURLToPath(new URL("./healthcheck.ts", import.meta.url));
let server: NatsServer;
let scheduler: Bus;

/** Runs the CLI and resolves with its exit code. */
function run(args: string[], env: Record<string, string>): Promise<number | null> {
  const child = spawn(process.execPath, ["--import", "tsx", SCRIPT, ...args], {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: "ignore",
  });
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

beforeAll(async () => {
  server = await startNatsServer({ jetstream: false });
  scheduler = await Bus.connect({ servers: server.url, prefix: "hc1", service: { name: "scheduler", version: "0.0.0" } });
});

afterAll(async () => {
  await scheduler?.close({ graceMs: 0 });
  await server?.stop();
});

describe("healthcheck", () => {
  it("finds a live instance of the same prefix only", async () => {
    await expect(checkServiceHealth("scheduler", loadConfig({ NATS_URL: server.url, ATLAS_NATS_PREFIX: "hc1" }))).resolves.toBe(true);
    const other = loadConfig({ NATS_URL: server.url, ATLAS_NATS_PREFIX: "hc2" });
    await expect(checkServiceHealth("scheduler", other, { timeoutMs: 300 })).resolves.toBe(false);
    const missing = loadConfig({ NATS_URL: server.url, ATLAS_NATS_PREFIX: "hc1" });
    await expect(checkServiceHealth("metrics", missing, { timeoutMs: 300 })).resolves.toBe(false);
  });

  it("exits 0 when the service answers and 1 when it does not or NATS is down", async () => {
    await expect(run(["scheduler"], { NATS_URL: server.url, ATLAS_NATS_PREFIX: "hc1" })).resolves.toBe(0);
    await expect(run(["api"], { NATS_URL: server.url, ATLAS_NATS_PREFIX: "hc1" })).resolves.toBe(1);
    await expect(run(["scheduler"], { NATS_URL: "nats://127.0.0.1:1", ATLAS_NATS_PREFIX: "hc1" })).resolves.toBe(1);
    await expect(run([], { NATS_URL: server.url })).resolves.toBe(2);
  }, 30_000);
});
