import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bus } from "@atlas/bus";
import { loadConfig } from "@atlas/config";
import { Health, type HealthReport } from "@atlas/contracts";
import { ensureDemoModel } from "@atlas/gguf";
import { createLogger } from "@atlas/log";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { backoffDelayMs, type ChildSpec, type ChildStatus, DEFAULT_BACKOFF } from "./child.ts";
import { childLogFormat, defaultChildSpecs, ignoredModelVariables, REPO_ROOT, workerPlans } from "./child_specs.ts";
import { hideCredentials, SUPERVISOR_SERVICE, type Supervisor, type SupervisorOptions, startSupervisor } from "./supervisor.ts";

const FIXTURE = join(REPO_ROOT, "libs/supervisor/src/testdata/fixture_service.ts");
const MAIN = join(REPO_ROOT, "libs/supervisor/src/main.ts");
const silent = createLogger({ service: "supervisor-test", level: "silent", format: "json" });

let server: NatsServer;
let bus: Bus;
let seq = 0;
const cleanups: (() => Promise<unknown> | void)[] = [];

function uniquePrefix(): string {
  seq += 1;
  return `sup${process.pid}x${seq}`;
}

/** Alive and not a zombie. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "atlas-sup-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The environment of a spawned supervisor: ours without any ATLAS_* or NATS_* variable, plus `extra`. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(ATLAS_|NATS_)/.test(k) && k !== "PORT" && k !== "HOST") env[k] = v;
  return { ...env, ...extra };
}

/** Asks the supervisor of `prefix` for its health over NATS; undefined while it is not there yet. */
async function supervisorHealth(client: Bus): Promise<HealthReport | undefined> {
  const found = await client.discover({ service: SUPERVISOR_SERVICE, timeoutMs: 300 });
  const id = found[0]?.id;
  if (id === undefined) return undefined;
  return client.call(Health, {}, { params: { service: SUPERVISOR_SERVICE, instance: id }, timeoutMs: 2000 }).catch(() => undefined);
}

function childrenOf(report: HealthReport | undefined): ChildStatus[] {
  return (report?.details?.children as ChildStatus[] | undefined) ?? [];
}

interface RunningMain {
  proc: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `libs/supervisor/src/main.ts` as `npm start` would, collecting its (and its children's) output. */
function runMain(env: NodeJS.ProcessEnv): RunningMain {
  const proc = spawn(process.execPath, ["--import", "tsx", MAIN], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  const collect = (chunk: Buffer) => {
    text += chunk.toString("utf8");
    if (text.length > 2_000_000) text = text.slice(-1_000_000);
  };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once("exit", (code, signal) => resolve({ code, signal }));
  });
  cleanups.push(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
  });
  return { proc, output: () => text, exited };
}

beforeAll(async () => {
  server = await startNatsServer();
  bus = await Bus.connect({ servers: server.url, prefix: "unused", service: { name: "supervisor-test", version: "0.0.0" } });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await bus?.close({ graceMs: 0 });
  await server?.stop();
});

describe("backoff and child specs", () => {
  it("doubles from 250 ms to 30 s", () => {
    expect([1, 2, 3, 4, 8, 20].map((n) => backoffDelayMs(n))).toEqual([250, 500, 1000, 2000, 30_000, 30_000]);
    expect(backoffDelayMs(1000, DEFAULT_BACKOFF)).toBe(30_000);
  });

  it("runs the services in start order with one worker id per worker", () => {
    const names = (env: Record<string, string>) =>
      defaultChildSpecs(loadConfig(env), "/repo").map((s) => (s.instance === undefined ? s.name : `${s.name}[${s.instance}]`));
    expect(names({ ATLAS_WORKERS: "2" })).toEqual([
      "metrics",
      "persistence",
      "scheduler",
      "inference-worker[worker-1]",
      "inference-worker[worker-2]",
      "api",
    ]);
    expect(names({ ATLAS_WORKERS: "0" })).toEqual(["metrics", "persistence", "scheduler", "api"]);
    expect(names({ ATLAS_WORKERS: "1", ATLAS_WORKER_ID: "w7" })).toContain("inference-worker[w7]");
    expect(names({ ATLAS_WORKERS: "2", ATLAS_WORKER_ID: "w7" })).toContain("inference-worker[w7-2]");
    expect(defaultChildSpecs(loadConfig({}), "/repo")[0]?.script).toBe("/repo/services/metrics/src/main.ts");
  });

  it("runs each ATLAS_MODELS entry's workers with its model path and id, numbered across models", () => {
    const specs = defaultChildSpecs(loadConfig({ ATLAS_MODELS: "alpha=/m/a.gguf:2,beta=/m/b.gguf,gamma=/m/g.gguf:0" }), "/repo");
    const workers = specs.filter((s) => s.name === "inference-worker");
    expect(workers.map((s) => ({ instance: s.instance, env: s.env }))).toEqual([
      { instance: "worker-1", env: { ATLAS_WORKER_ID: "worker-1", ATLAS_MODEL: "/m/a.gguf", ATLAS_MODEL_ID: "alpha" } },
      { instance: "worker-2", env: { ATLAS_WORKER_ID: "worker-2", ATLAS_MODEL: "/m/a.gguf", ATLAS_MODEL_ID: "alpha" } },
      { instance: "worker-3", env: { ATLAS_WORKER_ID: "worker-3", ATLAS_MODEL: "/m/b.gguf", ATLAS_MODEL_ID: "beta" } },
    ]);
    expect(specs.map((s) => s.name)).toEqual(["metrics", "persistence", "scheduler", ...workers.map((w) => w.name), "api"]);
    // ATLAS_MODELS wins over the one-model form: ATLAS_WORKERS and ATLAS_MODEL do not count, and are named as ignored.
    const both = { ATLAS_MODELS: "alpha=/m/a.gguf", ATLAS_WORKERS: "3", ATLAS_MODEL: "/m/x.gguf" };
    expect(workerPlans(loadConfig(both))).toEqual([{ id: "worker-1", model: "alpha", path: "/m/a.gguf" }]);
    expect(ignoredModelVariables(loadConfig(both), both)).toEqual(["ATLAS_MODEL", "ATLAS_WORKERS"]);
    expect(ignoredModelVariables(loadConfig({ ATLAS_WORKERS: "3" }), { ATLAS_WORKERS: "3" })).toEqual([]);
    // ATLAS_WORKER_ID: as is for a single worker, numbered for several.
    expect(workerPlans(loadConfig({ ATLAS_MODELS: "alpha=/m/a.gguf", ATLAS_WORKER_ID: "w7" })).map((w) => w.id)).toEqual(["w7"]);
    expect(workerPlans(loadConfig({ ATLAS_MODELS: "a=/a.gguf,b=/b.gguf", ATLAS_WORKER_ID: "w7" })).map((w) => w.id)).toEqual([
      "w7-1",
      "w7-2",
    ]);
    // The one-model form gives the workers no model of their own: they inherit ATLAS_MODEL (or the demo model).
    expect(defaultChildSpecs(loadConfig({ ATLAS_WORKERS: "1", ATLAS_MODEL: "/m/x.gguf" }), "/repo")[3]?.env).toEqual({
      ATLAS_WORKER_ID: "worker-1",
    });
  });

  it("hides credentials in NATS URLs", () => {
    expect(hideCredentials("nats://u:p@a:4222,nats://b:4222,tls://tok@c:4222")).toBe("nats://***@a:4222,nats://b:4222,tls://***@c:4222");
  });

  it("gives children pretty logs only on a terminal", () => {
    expect(childLogFormat("auto", true)).toBe("pretty");
    expect(childLogFormat("auto", false)).toBe("json");
    expect(childLogFormat("json", true)).toBe("json");
    expect(childLogFormat("pretty", false)).toBe("pretty");
  });
});

describe("startSupervisor with stand-in services", () => {
  async function start(options: {
    services: ChildSpec[];
    env?: Record<string, string>;
    config?: Record<string, string>;
    initialMs?: number;
    beforeWorkers?: SupervisorOptions["beforeWorkers"];
  }): Promise<{ sup: Supervisor; prefix: string }> {
    const prefix = uniquePrefix();
    const sup = await startSupervisor({
      config: loadConfig({ NATS_URL: server.url, ATLAS_NATS_PREFIX: prefix, ATLAS_SHUTDOWN_GRACE_MS: "0", ...options.config }),
      log: silent,
      env: cleanEnv(options.env ?? {}),
      services: options.services,
      backoff: { initialMs: options.initialMs ?? 50 },
      readyAfterMs: 5000,
      stdoutIsTTY: false,
      ...(options.beforeWorkers === undefined ? {} : { beforeWorkers: options.beforeWorkers }),
    });
    cleanups.push(() => sup.kill());
    return { sup, prefix };
  }
  const fixture = (name: string, env: Record<string, string> = {}, instance?: string): ChildSpec => ({
    name,
    script: FIXTURE,
    env: { FIXTURE_NAME: name, ...env },
    ...(instance === undefined ? {} : { instance }),
  });

  it("restarts a killed child after a backoff and reports it in health", async () => {
    const { sup, prefix } = await start({ services: [fixture("alpha"), fixture("beta")], initialMs: 1500 });
    const client = await Bus.connect({ servers: server.url, prefix, service: { name: "probe", version: "0.0.0" } });
    cleanups.push(() => client.close({ graceMs: 0 }));
    await expect.poll(() => sup.children().map((c) => c.state), { timeout: 10_000 }).toEqual(["running", "running"]);
    const before = sup.children()[0]?.pid;
    expect(before).toBeTypeOf("number");
    process.kill(before as number, "SIGKILL");

    await expect.poll(() => sup.children()[0]?.state, { timeout: 10_000 }).toBe("backoff");
    expect(sup.health().state).toBe("degraded");
    const degraded = await supervisorHealth(client);
    expect(degraded?.state).toBe("degraded");
    expect(childrenOf(degraded)[0]).toMatchObject({
      name: "alpha",
      state: "backoff",
      pid: null,
      last_exit: { code: null, signal: "SIGKILL" },
    });

    await expect.poll(() => sup.children()[0], { timeout: 15_000 }).toMatchObject({ state: "running", restarts: 1 });
    const after = sup.children()[0]?.pid;
    expect(after).not.toBe(before);
    expect(sup.children()[1]).toMatchObject({ state: "running", restarts: 0 });
    const ok = await supervisorHealth(client);
    expect(ok).toMatchObject({ service: "supervisor", state: "ok" });
    expect(childrenOf(ok).map((c) => c.pid)).toEqual(sup.children().map((c) => c.pid));

    const pids = sup.children().map((c) => c.pid as number);
    await expect(sup.stop()).resolves.toBe(0);
    expect(pids.filter(isAlive)).toEqual([]);
    expect(sup.children().map((c) => c.state)).toEqual(["stopped", "stopped"]);
  });

  it("stops everything with exit code 78 when a child reports a configuration error", async () => {
    const { sup } = await start({
      services: [fixture("steady"), fixture("broken", { FIXTURE_EXIT_CODE: "78", FIXTURE_EXIT_AFTER_MS: "300" })],
    });
    await expect.poll(() => sup.children()[0]?.pid, { timeout: 10_000 }).toBeTypeOf("number");
    const steady = sup.children()[0]?.pid as number;
    const code = await Promise.race([sup.done, new Promise((r) => setTimeout(() => r("timeout"), 15_000))]);
    expect(code).toBe(78);
    expect(isAlive(steady)).toBe(false);
    expect(sup.children()[1]).toMatchObject({ state: "stopped", restarts: 0, last_exit: { code: 78 } });
  });

  it("kills a child that ignores SIGTERM once the grace period is over", async () => {
    const { sup } = await start({ services: [fixture("stubborn", { FIXTURE_IGNORE_SIGTERM: "1" })] });
    await expect.poll(() => sup.children()[0]?.state, { timeout: 10_000 }).toBe("running");
    const pid = sup.children()[0]?.pid as number;
    await expect(sup.stop()).resolves.toBe(0);
    expect(isAlive(pid)).toBe(false);
    expect(sup.children()[0]?.last_exit?.signal).toBe("SIGKILL");
  });

  it("runs the step before the workers and hands its variables to them", async () => {
    const out = await tempDir();
    const seen: (string | undefined)[] = [];
    const { sup } = await start({
      env: { FIXTURE_OUT_DIR: out },
      services: [fixture("metrics"), fixture("inference-worker", { ATLAS_WORKER_ID: "w1" }, "w1"), fixture("api")],
      beforeWorkers: async (ctx) => {
        seen.push(ctx.env.NATS_URL);
        return { FIXTURE_EXTRA: "from-step" };
      },
    });
    await expect.poll(() => ["metrics", "w1", "api"].every((n) => existsSync(join(out, `${n}.json`))), { timeout: 10_000 }).toBe(true);
    const read = async (n: string) => JSON.parse(await readFile(join(out, `${n}.json`), "utf8")) as Record<string, string>;
    expect(await read("metrics")).toMatchObject({ NATS_URL: server.url, ATLAS_LOG_FORMAT: "json" });
    expect((await read("metrics")).FIXTURE_EXTRA).toBeUndefined();
    expect(await read("w1")).toMatchObject({ ATLAS_WORKER_ID: "w1", FIXTURE_EXTRA: "from-step" });
    expect(await read("api")).toMatchObject({ FIXTURE_EXTRA: "from-step" });
    expect(seen).toEqual([server.url]);
    await sup.stop();
  });
});

describe("npm start (main.ts) with the real services", () => {
  /**
   * Runs main.ts on the test's nats-server under a fresh prefix and data folder (no workers
   * unless `extra` says otherwise), with a probe connection on that prefix.
   */
  async function mainOnServer(extra: Record<string, string> = {}) {
    const prefix = uniquePrefix();
    const data = await tempDir();
    const main = runMain(
      cleanEnv({
        NATS_URL: server.url,
        ATLAS_NATS_PREFIX: prefix,
        ATLAS_WORKERS: "0",
        ATLAS_DATA_DIR: data,
        ATLAS_MEMORY_PATH: join(data, "memory"),
        PORT: "0",
        ATLAS_LOG_FORMAT: "json",
        ATLAS_SHUTDOWN_GRACE_MS: "2000",
        ...extra,
      }),
    );
    const client = await Bus.connect({ servers: server.url, prefix, service: { name: "probe", version: "0.0.0" } });
    cleanups.push(() => client.close({ graceMs: 0 }));
    const context = () => `supervisor output:\n${main.output().slice(-8000)}`;
    return { main, client, context };
  }

  it("restarts a killed service and leaves no process behind after SIGTERM", async () => {
    const { main, client, context } = await mainOnServer();

    let report: HealthReport | undefined;
    await expect
      .poll(
        async () => {
          report = await supervisorHealth(client);
          return childrenOf(report).map((c) => `${c.name}:${c.state}`);
        },
        { timeout: 45_000, interval: 500, message: "every service running" },
      )
      .toEqual(["metrics:running", "persistence:running", "scheduler:running", "api:running"]);
    expect(report?.state, context()).toBe("ok");
    expect(report?.details?.nats).toMatchObject({ url: server.url, embedded: false, pid: null });

    const victim = childrenOf(report).find((c) => c.name === "metrics");
    expect(victim?.pid, context()).toBeTypeOf("number");
    process.kill(victim?.pid as number, "SIGKILL");
    let restarted: ChildStatus | undefined;
    await expect
      .poll(
        async () => {
          restarted = childrenOf(await supervisorHealth(client)).find((c) => c.name === "metrics");
          return restarted !== undefined && restarted.restarts >= 1 && restarted.state === "running" && restarted.pid !== victim?.pid;
        },
        { timeout: 30_000, interval: 500, message: "metrics restarted" },
      )
      .toBe(true);
    expect(restarted?.last_exit).toMatchObject({ code: null, signal: "SIGKILL" });
    await expect.poll(() => main.output().includes("restarting in"), { timeout: 5000 }).toBe(true);

    const pids = childrenOf(await supervisorHealth(client)).map((c) => c.pid as number);
    expect(pids).toHaveLength(4);
    main.proc.kill("SIGTERM");
    const exit = await Promise.race([main.exited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
    expect(exit, context()).toEqual({ code: 0, signal: null });
    await expect.poll(() => pids.filter(isAlive), { timeout: 5000 }).toEqual([]);
  }, 120_000);

  it("runs the workers of every ATLAS_MODELS entry, each serving its own model, and the api lists them", async () => {
    const models = join(tmpdir(), "atlas-test-models");
    const alpha = await ensureDemoModel(models, { preset: "tiny" });
    const beta = await ensureDemoModel(models, { preset: "tiny", chatTemplate: "qwen2.5" });
    // ATLAS_WORKERS=0 (mainOnServer's) is ignored, with a warning: ATLAS_MODELS wins over the one-model form.
    const { main, client, context } = await mainOnServer({
      ATLAS_MODELS: `alpha=${alpha},beta=${beta}`,
      ATLAS_MODEL_ALIASES: "other=beta",
      ATLAS_SLOTS: "1",
      ATLAS_CTX_SIZE: "256",
    });
    await expect
      .poll(async () => childrenOf(await supervisorHealth(client)).map((c) => `${c.name}[${c.instance ?? ""}]:${c.state}`), {
        timeout: 60_000,
        interval: 500,
        message: "every service running",
      })
      .toEqual([
        "metrics[]:running",
        "persistence[]:running",
        "scheduler[]:running",
        "inference-worker[worker-1]:running",
        "inference-worker[worker-2]:running",
        "api[]:running",
      ]);
    expect(main.output(), context()).toContain("ATLAS_MODELS is set, so ATLAS_WORKERS is ignored");
    let address: string | undefined;
    await expect
      .poll(() => (address = /ATLAS api listening on (http:\/\/[^"\s]+)/.exec(main.output())?.[1]), { timeout: 20_000 })
      .toBeTypeOf("string");
    const listed = async () => {
      const r = await fetch(`${address}/v1/models`).catch(() => undefined);
      const body = (await r?.json().catch(() => undefined)) as { data?: { id: string; root: string }[] } | undefined;
      return (body?.data ?? []).map((m) => `${m.id}->${m.root}`);
    };
    try {
      await expect.poll(listed, { timeout: 60_000, interval: 500 }).toEqual(["alpha->alpha", "beta->beta", "other->beta"]);
    } catch (err) {
      // The output as it is when the wait fails (a `message` would be built before the wait began).
      throw new Error(context(), { cause: err });
    }
    // The supervisor says when the stack answers completions, and where (found over the bus: PORT=0).
    const ready = () => /"msg":"Ready: ([^ ]+) serves ([^"]+)"/.exec(main.output())?.slice(1);
    await expect.poll(ready, { timeout: 20_000 }).toBeDefined();
    const [readyAt, serves] = ready() ?? [];
    expect(readyAt).toBe(address);
    const named = serves?.split(", ") ?? []; // what /v1/models listed at that moment (ids, then aliases)
    expect(named.length).toBeGreaterThan(0);
    expect(["alpha", "beta", "other"]).toEqual(expect.arrayContaining(named));
    expect(main.output().match(/"msg":"Ready: /g), "said once").toHaveLength(1);

    main.proc.kill("SIGTERM");
    const exit = await Promise.race([main.exited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
    expect(exit, context()).toEqual({ code: 0, signal: null });
  }, 150_000);

  it("runs an embedded nats-server without NATS_URL and stops it with everything else", async () => {
    const prefix = uniquePrefix();
    const data = await tempDir();
    const main = runMain(
      cleanEnv({
        ATLAS_NATS_PREFIX: prefix,
        ATLAS_WORKERS: "0",
        ATLAS_DATA_DIR: data,
        ATLAS_MEMORY_PATH: join(data, "memory"),
        PORT: "0",
        ATLAS_LOG_FORMAT: "json",
        ATLAS_SHUTDOWN_GRACE_MS: "2000",
      }),
    );
    const context = () => `supervisor output:\n${main.output().slice(-8000)}`;
    let url: string | undefined;
    await expect
      .poll(
        () => {
          url = /"nats_url":"(nats:\/\/127\.0\.0\.1:\d+)"/.exec(main.output())?.[1];
          return url;
        },
        { timeout: 20_000, message: "embedded nats-server URL in the log" },
      )
      .toBeTypeOf("string");
    const client = await Bus.connect({ servers: url as string, prefix, service: { name: "probe", version: "0.0.0" } });
    cleanups.push(() => client.close({ graceMs: 0 }));

    let report: HealthReport | undefined;
    await expect
      .poll(
        async () => {
          report = await supervisorHealth(client);
          return childrenOf(report).filter((c) => c.pid !== null).length;
        },
        { timeout: 45_000, interval: 500, message: "every child spawned" },
      )
      .toBe(4);
    const nats = report?.details?.nats as { url: string; embedded: boolean; pid: number };
    expect(nats, context()).toMatchObject({ url, embedded: true });
    expect(isAlive(nats.pid)).toBe(true);
    // Its store is under ATLAS_DATA_DIR: nats-server creates `jetstream` in its store directory at start.
    expect(existsSync(join(data, "nats", "jetstream")), context()).toBe(true);
    expect(readFileSync(join(data, "nats", "nats-server.pid"), "utf8").trim(), context()).toBe(String(nats.pid));
    const pids = [...childrenOf(report).map((c) => c.pid as number), nats.pid];

    await client.close({ graceMs: 0 });
    main.proc.kill("SIGTERM");
    const exit = await Promise.race([main.exited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
    expect(exit, context()).toEqual({ code: 0, signal: null });
    await expect.poll(() => pids.filter(isAlive), { timeout: 5000 }).toEqual([]);
    expect(main.output()).toContain("Embedded nats-server stopped");
  }, 120_000);

  it("says how to get nats-server when it is missing", async () => {
    const data = await tempDir();
    const main = runMain(cleanEnv({ PATH: "/nonexistent", ATLAS_DATA_DIR: data, ATLAS_LOG_FORMAT: "json" }));
    const exit = await Promise.race([main.exited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(main.output()).toContain("apt-get install -y nats-server");
    expect(main.output()).toContain("NATS_URL");
    expect(main.output()).toContain("docker compose up");
  }, 30_000);
});
