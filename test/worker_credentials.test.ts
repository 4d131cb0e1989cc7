/**
 * Least privilege for the inference workers (docs/adr/0015-worker-credentials.md): each worker is
 * its own NATS user (`worker-<n>`, its id), allowed only its own id's subjects; workers started
 * with the pool's credentials (compose's `ATLAS_WORKER_CREDENTIALS`) claim one each; and
 * compose's `nats-init` (scripts/nats-init.mjs) creates the passwords once and reuses them; a
 * worker cannot manage the buckets the workers share (claims, wrapped data keys), and a claim that
 * lapsed and was taken by another process is noticed by its first holder.
 * Everything against a real nats-server running the generated configuration.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "@atlas/config";
import { memoryKeysBucket, WorkerControl, WorkerGenerate, WorkerHeartbeat, workerClaimsBucket } from "@atlas/contracts";
import { claimWorkerCredential, resolveWorkerId } from "@atlas/inference-worker";
import { createLogger } from "@atlas/log";
import { composeNatsConfig } from "@atlas/supervisor";
import { startNatsServer } from "@atlas/testing";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type ChildService, REPO, type Stack, startStack } from "./helpers/stack.ts";

const INIT = join(REPO, "scripts", "nats-init.mjs");
const log = createLogger({ service: "test", level: "silent", format: "json" });

function runInit(config: string, out: string) {
  return spawnSync(process.execPath, [INIT, "--config", config, "--out", out], { encoding: "utf8" });
}

describe("nats-init (compose's one-shot credentials service)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "atlas-nats-init-"));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it("creates every user's password once, reuses them, and nats-server admits each user with its own", async () => {
    const conf = join(dir, "atlas.conf");
    await writeFile(conf, await composeNatsConfig("atlas", 3));
    const out = join(dir, "out");
    const first = runInit(conf, out);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain("7 NATS users, 7 new password(s), 0 kept");
    const files = {
      api: join(out, "api", "api"),
      metrics: join(out, "metrics", "metrics"),
      "worker-1": join(out, "inference-worker", "worker-1"),
      "worker-3": join(out, "inference-worker", "worker-3"),
    };
    const before = Object.fromEntries(await Promise.all(Object.entries(files).map(async ([u, f]) => [u, await readFile(f, "utf8")])));
    expect((await stat(files.api)).mode & 0o777).toBe(0o400);
    expect((await stat(join(out, "server", "nats.conf"))).mode & 0o777).toBe(0o600);

    // The second start keeps every password (the services' volumes hold the same ones).
    const second = runInit(conf, out);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toContain("7 NATS users, 0 new password(s), 7 kept");
    for (const [u, f] of Object.entries(files)) expect(await readFile(f, "utf8")).toBe(before[u]);
    const rendered = await readFile(join(out, "server", "nats.conf"), "utf8");
    expect(rendered).not.toContain("$ATLAS_NATS_PASSWORD");

    // The rendered configuration runs nats-server; each user gets in with its own password only.
    await using server = await startNatsServer({ config: rendered });
    const pw = (u: keyof typeof files) => (before[u] ?? "").trim();
    for (const user of ["api", "worker-1", "worker-3"] as const) {
      const nc = await connect({ servers: server.url, user, pass: pw(user) });
      await nc.flush();
      await nc.close();
    }
    await expect(connect({ servers: server.url, user: "worker-1", pass: pw("worker-3") })).rejects.toThrow(/authorization/i);
    await expect(connect({ servers: server.url, user: "api", pass: pw("metrics") })).rejects.toThrow(/authorization/i);
    await expect(connect({ servers: server.url })).rejects.toThrow(/authorization/i);
  });

  it("fails closed: no users, or a password variable with no user, and it exits 1", async () => {
    const empty = join(dir, "empty.conf");
    await writeFile(empty, "authorization { users = [] }\n");
    const none = runInit(empty, join(dir, "out-empty"));
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/names no user/);
    const stray = join(dir, "stray.conf");
    await writeFile(stray, `${await composeNatsConfig("atlas", 1)}\nfoo: $ATLAS_NATS_PASSWORD_NOBODY\n`);
    const bad = runInit(stray, join(dir, "out-stray"));
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("ATLAS_NATS_PASSWORD_NOBODY");
    await expect(stat(join(dir, "out-stray", "server", "nats.conf"))).rejects.toThrow();
  });
});

describe("docker-compose.yml (no Docker engine here: its structure)", () => {
  interface ComposeService {
    command?: string[];
    environment?: Record<string, string>;
    volumes?: string[];
    depends_on?: Record<string, { condition: string }>;
    restart?: string;
  }

  it("starts nats after nats-init, and mounts each service's own password only (the workers: the pool)", async () => {
    const text = await readFile(join(REPO, "docker-compose.yml"), "utf8");
    const compose = parse(text, { merge: true }) as { services: Record<string, ComposeService>; volumes: Record<string, unknown> };
    const { services } = compose;
    const auth = (s: ComposeService) => (s.volumes ?? []).filter((v) => v.startsWith("nats-auth-"));
    const init = services["nats-init"];
    const nats = services.nats;
    expect(init?.restart).toBe("no");
    expect(init?.command).toEqual(expect.arrayContaining(["/init/nats-init.mjs", "--config", "/init/atlas.conf", "--out", "/out"]));
    expect(nats?.depends_on?.["nats-init"]?.condition).toBe("service_completed_successfully");
    expect(nats?.command).toContain("/etc/nats/auth/nats.conf");
    expect(auth(nats ?? {})).toEqual(["nats-auth-server:/etc/nats/auth:ro"]);
    // No password in the environment of anything, nor a variable that must be set first.
    expect(JSON.stringify(services)).not.toMatch(/ATLAS_NATS_PASSWORD|NATS_PASSWORD:/);

    for (const name of ["metrics", "persistence", "scheduler", "api"]) {
      const svc = services[name] ?? {};
      expect(svc.environment?.NATS_USER, name).toBe(name);
      expect(svc.environment?.NATS_PASSWORD_FILE, name).toBe(`/run/atlas/nats/${name}`);
      expect(auth(svc), name).toEqual([`nats-auth-${name}:/run/atlas/nats:ro`]);
      expect(init?.volumes, name).toContain(`nats-auth-${name}:/out/${name}`); // nats-init writes /out/<name>/<name>
      expect(svc.depends_on?.nats?.condition, name).toBe("service_healthy");
    }
    for (const name of ["inference-worker", "inference-worker-2", "inference-worker-gpu"]) {
      const svc = services[name] ?? {};
      expect(svc.environment?.ATLAS_WORKER_CREDENTIALS, name).toBe("/run/atlas/nats");
      expect(svc.environment?.NATS_USER, name).toBeUndefined();
      expect(svc.environment?.ATLAS_WORKER_ID, name).toBeUndefined(); // each replica claims its own
      expect(auth(svc), name).toEqual(["nats-auth-workers:/run/atlas/nats:ro"]);
    }
    expect(init?.volumes).toContain("nats-auth-workers:/out/inference-worker");
    expect(init?.volumes).toContain("nats-auth-server:/out/server");
    for (const v of init?.volumes ?? []) if (v.startsWith("nats-auth-")) expect(Object.keys(compose.volumes)).toContain(v.split(":")[0]);
  });
});

describe("the images' entrypoint (deploy/nats/with-nats-password.sh)", () => {
  const script = join(REPO, "deploy", "nats", "with-nats-password.sh");
  const print = [process.execPath, "-e", "process.stdout.write(process.env.NATS_PASSWORD ?? '(unset)')"];

  it("runs the command with NATS_PASSWORD read from NATS_PASSWORD_FILE, and not at all when the file is missing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "atlas-pwfile-"));
    try {
      await writeFile(join(dir, "api"), "s3cret-from-file\n");
      const env = { PATH: process.env.PATH ?? "" };
      const ok = spawnSync("sh", [script, ...print], { env: { ...env, NATS_PASSWORD_FILE: join(dir, "api") }, encoding: "utf8" });
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stdout).toBe("s3cret-from-file");
      const plain = spawnSync("sh", [script, ...print], { env: { ...env, NATS_PASSWORD: "given" }, encoding: "utf8" });
      expect(plain.stdout).toBe("given");
      const missing = spawnSync("sh", [script, ...print], { env: { ...env, NATS_PASSWORD_FILE: join(dir, "nope") }, encoding: "utf8" });
      expect(missing.status).not.toBe(0);
      expect(missing.stdout).toBe("");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a worker's id and its NATS user", () => {
  it("is the pool user's name, and another ATLAS_WORKER_ID with a pool user is a configuration error", () => {
    expect(resolveWorkerId(loadConfig({ NATS_USER: "worker-7", NATS_PASSWORD: "x" }))).toBe("worker-7");
    expect(resolveWorkerId(loadConfig({ NATS_USER: "worker-7", NATS_PASSWORD: "x", ATLAS_WORKER_ID: "worker-7" }))).toBe("worker-7");
    expect(() => resolveWorkerId(loadConfig({ NATS_USER: "worker-7", NATS_PASSWORD: "x", ATLAS_WORKER_ID: "worker-2" }))).toThrow(
      /differs from the NATS user "worker-7"/,
    );
    // Not a pool user (the shared one, or none): ATLAS_WORKER_ID, else a random id.
    expect(resolveWorkerId(loadConfig({ NATS_USER: "inference-worker", NATS_PASSWORD: "x", ATLAS_WORKER_ID: "proc-a" }))).toBe("proc-a");
    expect(resolveWorkerId(loadConfig({ NATS_USER: "inference-worker", NATS_PASSWORD: "x" }))).toMatch(/^w-[0-9a-f]{8}$/);
  });
});

describe("workers with their own NATS users", () => {
  let stack: Stack;
  let pool: string;
  const workers: ChildService[] = [];

  beforeAll(async () => {
    // No in-process worker: two worker processes claim their users from the pool, as in compose.
    stack = await startStack({ workers: 0, maxWorkers: 3 });
    pool = await mkdtemp(join(tmpdir(), "atlas-pool-"));
    for (const user of ["worker-1", "worker-2", "worker-3"]) {
      await writeFile(join(pool, user), `${stack.credentials.get(user)?.password}\n`, { mode: 0o400 });
    }
    const env = { ATLAS_WORKER_CREDENTIALS: pool, ATLAS_WORKER_ID: "", NATS_USER: "", NATS_PASSWORD: "" };
    for (let i = 0; i < 2; i++) workers.push(await stack.spawn("worker", env)); // one after the other: first gets worker-1
  }, 120_000);
  afterAll(async () => {
    await stack?.close();
    await rm(pool, { recursive: true, force: true });
  });

  /** Each worker's id in status, with the tokens its slots hold (> 0 once it served a chat). */
  async function statusWorkers(): Promise<Map<string, number>> {
    const status = (await (await fetch(`${stack.baseUrl}/v1/atlas/status`)).json()) as {
      services: Record<string, { details?: { worker_id?: string; slot_states?: { tokens: number }[] } }[]>;
    };
    const workers = new Map<string, number>();
    for (const w of status.services["inference-worker"] ?? []) {
      const id = w.details?.worker_id;
      if (id !== undefined)
        workers.set(
          id,
          (w.details?.slot_states ?? []).reduce((sum, s) => sum + s.tokens, 0),
        );
    }
    return workers;
  }

  it("two worker processes claim distinct users from one credentials folder and both serve chats", async () => {
    await expect
      .poll(async () => [...(await statusWorkers()).keys()].sort(), { timeout: 30_000, interval: 250 })
      .toEqual(["worker-1", "worker-2"]);
    // More chats at once than one worker has slots (2 each): both workers take some.
    const chats = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "atlas-tiny", messages: [{ role: "user", content: `Hello ${i}` }], max_tokens: 24 }),
        });
        await res.text();
        return res.status;
      }),
    );
    expect(chats).toEqual(Array.from({ length: 8 }, () => 200));
    const served = await statusWorkers();
    expect(served.get("worker-1")).toBeGreaterThan(0);
    expect(served.get("worker-2")).toBeGreaterThan(0);
    // Each under its own user: nats-server refused nothing (close() fails on any refusal a test did not provoke).
    expect(stack.violations()).toEqual([]);
  });

  it("answers compose's worker health check, run as worker-1 through the images' entrypoint", async () => {
    const env = stack.envFor("api");
    const check = spawnSync(
      "sh",
      [
        join(REPO, "deploy/nats/with-nats-password.sh"),
        process.execPath,
        "--import",
        "tsx",
        "libs/service/src/healthcheck.ts",
        "inference-worker",
      ],
      {
        cwd: REPO,
        env: {
          PATH: process.env.PATH ?? "",
          NATS_URL: env.NATS_URL,
          ATLAS_NATS_PREFIX: env.ATLAS_NATS_PREFIX,
          NATS_USER: "worker-1",
          NATS_PASSWORD_FILE: join(pool, "worker-1"),
        },
        encoding: "utf8",
      },
    );
    expect(check.status, check.stderr).toBe(0);
    expect(stack.violations()).toEqual([]);
  });

  it("claims in-process too: the third user is free, then none is, and a released one is free again", async () => {
    const config = loadConfig({ ...stack.envFor("api"), NATS_USER: "", NATS_PASSWORD: "", ATLAS_WORKER_CREDENTIALS: pool });
    const third = await claimWorkerCredential(config, log);
    expect(third.user).toBe("worker-3");
    await expect(claimWorkerCredential(config, log)).rejects.toThrow(/Every worker credential .* is claimed \(3\)/);
    await third.release();
    const again = await claimWorkerCredential(config, log);
    expect(again.user).toBe("worker-3");
    await again.release();
    // Any failure but a claim held elsewhere is reported as itself (here: another prefix's bucket, refused).
    stack.allowViolations((line) => line.includes('User "worker-3"') && line.includes("other"));
    const other = { ...config, ATLAS_NATS_PREFIX: "other" };
    const err = String(await claimWorkerCredential(other, log, { only: "worker-3" }).catch((e: unknown) => e));
    expect(err).toMatch(/Cannot claim worker credential worker-3 .*other_worker_claims.*permission/i);
    expect(err).not.toMatch(/ATLAS_MAX_WORKERS/);
  });

  it("a claim that lapsed and was taken by another process: its holder learns it at the next refresh, and its release leaves the new claim", async () => {
    const config = loadConfig({ ...stack.envFor("api"), NATS_USER: "", NATS_PASSWORD: "", ATLAS_WORKER_CREDENTIALS: pool });
    const tc = await connect({ servers: stack.nats.url });
    try {
      const claims = await new Kvm(tc).open(workerClaimsBucket(stack.config.ATLAS_NATS_PREFIX));
      const lost: unknown[] = [];
      const lostAgain: unknown[] = [];
      const first = await claimWorkerCredential(config, log, { only: "worker-3", refreshMs: 100, onLost: (err) => lost.push(err) });
      // The claim lapses (as after 15 s without a refresh): gone from the bucket; another process claims the user.
      await claims.delete("worker-3");
      const second = await claimWorkerCredential(config, log, { only: "worker-3", refreshMs: 100, onLost: (err) => lostAgain.push(err) });
      await expect.poll(() => lost.length, { timeout: 5000 }).toBe(1);
      await first.release(); // not its claim any more: nothing is deleted
      const held = await claims.get("worker-3");
      expect(held?.operation).toBe("PUT");
      await new Promise((r) => setTimeout(r, 400)); // the second holder keeps refreshing its own revision
      expect(lostAgain).toEqual([]);
      expect((await claims.get("worker-3"))?.revision).toBeGreaterThan(held?.revision ?? 0);
      await second.release();
      expect((await claims.get("worker-3"))?.operation).toBe("DEL");
    } finally {
      await tc.close();
    }
  });

  describe("worker-1's connection, on worker-2's subjects", () => {
    let nc: NatsConnection;
    const errors: string[] = [];
    beforeAll(async () => {
      const c = stack.credentials.get("worker-1");
      nc = await connect({ servers: stack.nats.url, user: "worker-1", pass: c?.password ?? "" });
      void (async () => {
        for await (const s of nc.status()) if (s.type === "error") errors.push(String((s as { error?: Error }).error?.message));
      })();
    });
    afterAll(async () => nc?.close());

    it("is refused by nats-server: publishing worker-2's heartbeat or claim, taking its generate or control messages", async () => {
      const prefix = stack.config.ATLAS_NATS_PREFIX;
      const heartbeat2 = WorkerHeartbeat.subject(prefix, { workerId: "worker-2" });
      const claim2 = `$KV.${workerClaimsBucket(prefix)}.worker-2`;
      const generate2 = WorkerGenerate.subject(prefix, { workerId: "worker-2" });
      const control2 = WorkerControl.subject(prefix, { workerId: "worker-2" });
      const provoked = [heartbeat2, claim2, generate2, control2];
      stack.allowViolations((line) => line.includes(`User "worker-1"`) && provoked.some((s) => line.includes(`"${s}"`)));

      nc.publish(heartbeat2, new Uint8Array());
      nc.publish(claim2, new Uint8Array());
      const generate = nc.subscribe(generate2);
      const control = nc.subscribe(control2);
      await nc.flush();
      await expect(generate.closed).resolves.toBeInstanceOf(Error);
      await expect(control.closed).resolves.toBeInstanceOf(Error);
      await expect
        .poll(() => errors.join("\n"), { timeout: 5000 })
        .toMatch(/Permissions Violation for Publish to "[^"]*heartbeat\.worker-2"/);
      await expect
        .poll(() => stack.violations().filter((v) => v.includes(`User "worker-1"`)).length, { timeout: 5000 })
        .toBe(provoked.length);
      const refused = stack.violations().join("\n");
      expect(refused).toContain(`Publish Violation - User "worker-1", Subject "${heartbeat2}"`);
      expect(refused).toContain(`Publish Violation - User "worker-1", Subject "${claim2}"`);
      expect(refused).toContain(`Subscription Violation - User "worker-1", Subject "${generate2}"`);
      expect(refused).toContain(`Subscription Violation - User "worker-1", Subject "${control2}"`);
    });

    it("is allowed on its own subjects: its heartbeat, its generate and control subjects, the queue group", async () => {
      const prefix = stack.config.ATLAS_NATS_PREFIX;
      const before = stack.violations().length;
      // worker-1's real heartbeat, heard by the tests' own (unrestricted) client and sent again
      // through worker-1's user (marked with a header): the server passes it on.
      const listener = await connect({ servers: stack.nats.url });
      try {
        const subject = WorkerHeartbeat.subject(prefix, { workerId: "worker-1" });
        const heard = listener.subscribe(subject);
        const beats = heard[Symbol.asyncIterator]();
        const real = await beats.next();
        expect(real.done).toBe(false);
        const h = headers();
        h.set("x-test-probe", "1");
        nc.publish(subject, real.value?.data ?? new Uint8Array(), { headers: h });
        let echoed = false;
        for (let i = 0; i < 5 && !echoed; i++) echoed = (await beats.next()).value?.headers?.get("x-test-probe") === "1";
        expect(echoed).toBe(true);
        heard.unsubscribe();
      } finally {
        await listener.close();
      }
      const own = [
        nc.subscribe(WorkerGenerate.subject(prefix, { workerId: "worker-1" })),
        nc.subscribe(WorkerControl.subject(prefix, { workerId: "worker-1" })),
        nc.subscribe(WorkerGenerate.subject(prefix, { workerId: "any" }), { queue: "probe-only" }),
      ];
      await nc.flush();
      for (const s of own) expect(s.isClosed()).toBe(false);
      for (const s of own) s.unsubscribe();
      expect(stack.violations().length).toBe(before);
    });

    it("cannot manage the claims or the data-key streams, nor delete worker-2's claim; JetStream refuses its rollups", async () => {
      const prefix = stack.config.ATLAS_NATS_PREFIX;
      const [keys, claims] = [memoryKeysBucket(prefix), workerClaimsBucket(prefix)];
      const ops = ["PURGE", "DELETE", "UPDATE", "MSG.DELETE"];
      const refused = [
        ...[`KV_${keys}`, `KV_${claims}`].flatMap((s) => ops.map((op) => `$JS.API.STREAM.${op}.${s}`)),
        `$JS.API.CONSUMER.CREATE.KV_${keys}`, // listing or watching the keys
        `$KV.${keys}.check`,
        `$KV.${keys}.t.default`,
        `$KV.${claims}.worker-2`,
      ];
      stack.allowViolations((line) => line.includes(`User "worker-1"`) && refused.some((s) => line.includes(`"${s}"`)));
      for (const subject of refused.slice(0, -1)) nc.publish(subject, "{}");
      // worker-2's claim, through the KV client: refused, and the claim is still there.
      await expect(new Kvm(jetstream(nc, { timeout: 2000 })).open(claims).then((kv) => kv.delete("worker-2"))).rejects.toThrow();
      const seen = (s: string) => stack.violations().some((v) => v.includes(`Publish Violation - User "worker-1", Subject "${s}"`));
      await expect.poll(() => refused.filter(seen), { timeout: 5000 }).toEqual(refused);
      expect((await (await new Kvm(nc).open(claims)).get("worker-2"))?.operation).toBe("PUT"); // reads are allowed
      // Its own key: a rollup of the whole claims stream (a purge by another name) is refused by JetStream.
      const h = headers();
      h.set("Nats-Rollup", "all");
      await expect(jetstream(nc).publish(`$KV.${claims}.worker-1`, "{}", { headers: h })).rejects.toThrow(/rollup/i);
      // And on the one data key it may write: persistence locked that stream too (no wiping the tenants' keys).
      await expect(jetstream(nc).publish(`$KV.${keys}.s.kvstate`, "{}", { headers: h })).rejects.toThrow(/rollup/i);
    });
  });

  it("a worker process stopped cleanly (SIGTERM) releases its claim at once", async () => {
    const worker2 = workers[1] as ChildService;
    worker2.kill("SIGTERM");
    await worker2.exited;
    const tc = await connect({ servers: stack.nats.url });
    const claim = await (await new Kvm(tc).open(workerClaimsBucket(stack.config.ATLAS_NATS_PREFIX))).get("worker-2");
    await tc.close();
    expect(claim?.operation).toBe("DEL"); // not left to expire 15 s later
  });
});
