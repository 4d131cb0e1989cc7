/**
 * The production runtime: `npm run build`, then the compiled supervisor runs the compiled services
 * with plain node (no tsx), and they find what they read next to their code (the dashboard).
 * The build is incremental: a no-op (under a second) when CI has just run it.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bus } from "@atlas/bus";
import { loadConfig } from "@atlas/config";
import { Health, type HealthReport } from "@atlas/contracts";
import { freePort, type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChildStatus } from "./child.ts";
import { defaultChildSpecs, REPO_ROOT } from "./child_specs.ts";
import { nodeArgsFor, RUNTIME, serviceModule, serviceV8Args } from "./runtime.ts";
import { SUPERVISOR_SERVICE } from "./supervisor.ts";

describe("runtime paths", () => {
  it("runs sources through tsx and compiled code with plain node", () => {
    expect(RUNTIME).toBe("tsx"); // the tests run the sources
    expect(serviceModule("/repo", "api", "main", "compiled")).toBe("/repo/services/api/dist/main.js");
    expect(serviceModule("/repo", "api", "main", "tsx")).toBe("/repo/services/api/src/main.ts");
    expect(nodeArgsFor("/repo/services/api/dist/main.js")).toEqual([]);
    expect(nodeArgsFor("/repo/services/api/src/main.ts")).toEqual(["--conditions=development", "--import", "tsx"]);
    const compiled = defaultChildSpecs(loadConfig({ ATLAS_WORKERS: "1" }), "/repo", "compiled").map((s) => s.script);
    expect(compiled).toEqual(
      ["metrics", "persistence", "scheduler", "inference-worker", "api"].map((n) => `/repo/services/${n}/dist/main.js`),
    );
  });
});

describe("npm start: the compiled services", () => {
  let server: NatsServer;
  let dir: string;

  beforeAll(async () => {
    const build = spawnSync(process.execPath, [join(REPO_ROOT, "scripts", "build.mjs")], { cwd: REPO_ROOT, encoding: "utf8" });
    if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
    server = await startNatsServer();
    dir = await mkdtemp(join(tmpdir(), "atlas-compiled-"));
  }, 300_000);

  afterAll(async () => {
    await server?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("runs every service from dist/ without a loader and serves the dashboard", async () => {
    const prefix = `compiled${process.pid}`;
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(ATLAS_|NATS_|NODE_OPTIONS$|PORT$|HOST$)/.test(k)) env[k] = v;
    Object.assign(env, {
      NATS_URL: server.url,
      ATLAS_NATS_PREFIX: prefix,
      ATLAS_WORKERS: "0",
      ATLAS_DATA_DIR: join(dir, "data"),
      ATLAS_MEMORY_PATH: join(dir, "memory"),
      HOST: "127.0.0.1",
      PORT: String(port),
      ATLAS_LOG_FORMAT: "json",
      ATLAS_SHUTDOWN_GRACE_MS: "2000",
    });
    const main: ChildProcess = spawn(process.execPath, [join(REPO_ROOT, "libs", "supervisor", "dist", "main.js")], {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    main.stdout?.on("data", (c: Buffer) => (output = (output + c.toString("utf8")).slice(-200_000)));
    main.stderr?.on("data", (c: Buffer) => (output = (output + c.toString("utf8")).slice(-200_000)));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      main.once("exit", (code, signal) => r({ code, signal })),
    );
    const client = await Bus.connect({ servers: server.url, prefix, service: { name: "probe", version: "0.0.0" } });
    try {
      let children: ChildStatus[] = [];
      await expect
        .poll(
          async () => {
            children = childrenOf(await supervisorHealth(client));
            return children.map((c) => `${c.name}:${c.state}`);
          },
          { timeout: 45_000, interval: 500, message: "every compiled service running" },
        )
        .toEqual(["metrics:running", "persistence:running", "scheduler:running", "api:running"]);
      expect(output).toContain("Running the compiled services");
      for (const c of children) {
        const argv = readFileSync(`/proc/${c.pid}/cmdline`, "utf8").split("\0").filter(Boolean);
        expect(argv.slice(1)).toEqual([...serviceV8Args(c.name), join(REPO_ROOT, "services", c.name, "dist", "main.js")]);
      }
      // "running" may come from the 1 s timer, before the api listens: wait for it.
      const page = async () => fetch(`http://127.0.0.1:${port}/dashboard`).then((r) => (r.ok ? r.text() : `HTTP ${r.status}`), String);
      await expect.poll(page, { timeout: 20_000, interval: 250 }).toContain("<html");
      expect((await fetch(`http://127.0.0.1:${port}/dashboard/dashboard.js`)).status).toBe(200);
    } finally {
      await client.close({ graceMs: 0 });
      main.kill("SIGTERM");
      const exit = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
      if (exit === "timeout") main.kill("SIGKILL");
      expect(exit).toEqual({ code: 0, signal: null });
    }
  }, 90_000);
});

async function supervisorHealth(client: Bus): Promise<HealthReport | undefined> {
  const found = await client.discover({ service: SUPERVISOR_SERVICE, timeoutMs: 300 });
  const id = found[0]?.id;
  if (id === undefined) return undefined;
  return client.call(Health, {}, { params: { service: SUPERVISOR_SERVICE, instance: id }, timeoutMs: 2000 }).catch(() => undefined);
}

function childrenOf(report: HealthReport | undefined): ChildStatus[] {
  return (report?.details?.children as ChildStatus[] | undefined) ?? [];
}
