/**
 * Session memory and KV state encrypted at rest, on a real cluster (nats-server, the five
 * services, the generated tiny model), with a master key in ATLAS_MEMORY_KEY:
 *
 * - a raw read of what is stored — the session log's messages, the KV bucket's values (chunks),
 *   the wrapped keys, the mirror files, the L2 snapshot files and the L3 objects, and the
 *   nats-server store files themselves — holds no plaintext of the conversation;
 * - a session survives a persistence restart, and an export of the mirror (the folder) imported
 *   into a wiped JetStream store, with the data keys restored from the mirror;
 * - a wrong or missing key stops persistence at start with a clear error;
 * - old plain data is still read once a key is set, and every write is sealed;
 * - a flipped byte in a record or a mirror file is refused and reported, never served;
 * - rotation re-wraps the data keys with a new master key without rewriting the data;
 * - a worker's user reads the snapshot key alone, and a worker waits for a key store persistence has
 *   not made yet instead of making it.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BusJetStream } from "@atlas/bus";
import { loadConfig } from "@atlas/config";
import {
  Health,
  KV_STATE_KEY_SCOPE,
  l3Bucket,
  MemoryLog,
  memoryKeysBucket,
  memoryNames,
  ServiceName,
  TRANSIT_KEY_SCOPE,
} from "@atlas/contracts";
import { createLogger } from "@atlas/log";
import { memoryKeyCommand } from "@atlas/persistence";
import { isSealed, keyCheckValue, readHeader, seal } from "@atlas/sealed";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSnapshotSealer } from "../services/inference-worker/src/snapshot_keys.ts";
import { jsonCall } from "./helpers/http.ts";
import { rawMessages as rawMessagesOf } from "./helpers/jetstream.ts";
import { REPO, type Stack, startStack } from "./helpers/stack.ts";

const K1 = randomBytes(32).toString("base64");
const K2 = randomBytes(32).toString("base64");
/** The conversation's secret: it must never be readable at rest. */
const SECRET = "marmalade-in-the-blue-jar";
const BIG_SECRET = "quince-under-the-stairs";

let stack: Stack;
let nc: NatsConnection;
const prefix = () => stack.config.ATLAS_NATS_PREFIX;
const root = () => stack.config.ATLAS_MEMORY_PATH;

beforeAll(async () => {
  stack = await startStack({
    env: { ATLAS_MEMORY_KEY: K1, ATLAS_AUTO_SAVE_INTERVAL: "1", ATLAS_SLOTS: "1", ATLAS_KV_RESTORE: "always" },
  });
  nc = await connect({ servers: stack.nats.url });
}, 120_000);
afterAll(async () => {
  await nc?.close();
  await stack?.close();
});

const api = (method: string, path: string, body?: unknown) => jsonCall(stack.baseUrl, method, path, body);

async function chat(session: string, content: string) {
  const r = await api("POST", "/v1/chat/completions", {
    model: "atlas-tiny",
    messages: [{ role: "user", content }],
    max_tokens: 8,
    temperature: 0,
    atlas: { session_id: session },
  });
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json;
}

/** Every message of a stream, raw. */
const rawMessages = (stream: string) => rawMessagesOf(nc, stream);

/** Every file under a folder, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/**
 * A listed file's bytes, or null when it was gone by the time it was read: the mirror writes to a
 * temporary file and renames it, and nats-server removes compacted blocks, so a file listed a
 * moment ago may no longer exist. Its content then lives under the name it was renamed to.
 */
async function readListed(file: string): Promise<Buffer | null> {
  return readFile(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return null;
    throw e;
  });
}

async function persistenceHealth() {
  const instance = stack.running.get("persistence")?.[0]?.bus.instance ?? "";
  return stack.running.get("api")?.[0]?.bus.call(Health, {}, { params: { service: ServiceName.persistence, instance } });
}

const sealedFile = (session: string) => join(root(), "default", `${session}.sealed`);

describe("encryption at rest", () => {
  let worker = "";

  it("stores a conversation with no plaintext in the log, the bucket, the mirror or the store files", async () => {
    const first = await chat("enc-1", `Remember: the ${SECRET}.`);
    worker = first.atlas.workers[0];
    // A large document: compressed, encrypted, and in chunks (random text does not compress below
    // 256 KiB); over 1 MiB, so sealed and opened in slices (sealLarge/openLarge).
    const big = `${BIG_SECRET} ${randomBytes(800 * 1024).toString("base64")}`;
    const put = await api("PUT", "/v1/atlas/memory/enc-big", { version: 1, layers: [{ messages: [{ role: "user", content: big }] }] });
    expect(put.status).toBe(201);
    expect((await api("GET", "/v1/atlas/memory/enc-big")).json.layers[0].messages[0].content).toBe(big);

    const names = memoryNames(prefix());
    const log = await rawMessages(names.log);
    expect(log.length).toBeGreaterThanOrEqual(2);
    for (const m of log) {
      expect(m.data.includes(SECRET)).toBe(false);
      expect(m.data.includes(BIG_SECRET)).toBe(false);
      const rec = JSON.parse(m.data.toString());
      expect(rec.layer ?? rec.doc).toBeUndefined(); // never inline plaintext
      const stored = rec.sealed === undefined ? undefined : Buffer.from(rec.sealed, "base64");
      if (stored !== undefined) expect(readHeader(stored)).toMatchObject({ encrypted: true, keyId: "t.default:1" });
    }
    const chunks = await rawMessages(`KV_${names.kv}`);
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) expect(c.data.includes(BIG_SECRET)).toBe(false);
    // The wrapped keys hold neither the master key nor a data key in the clear.
    for (const k of await rawMessages(`KV_${memoryKeysBucket(prefix())}`)) expect(k.data.includes(K1)).toBe(false);

    // The mirror: sealed files only, no plaintext; the wrapped keys beside them.
    await expect.poll(() => readFile(sealedFile("enc-1")).catch(() => null), { timeout: 10_000 }).not.toBeNull();
    await expect.poll(() => readFile(sealedFile("enc-big")).catch(() => null), { timeout: 10_000 }).not.toBeNull();
    for (const f of await filesUnder(root())) {
      expect(f.endsWith(".json") && !f.endsWith("memory-keys.json"), f).toBe(false);
      const bytes = await readListed(f);
      if (bytes === null) continue;
      expect(bytes.includes(SECRET), f).toBe(false);
      expect(bytes.includes(BIG_SECRET), f).toBe(false);
      expect(bytes.includes(K1), f).toBe(false);
    }
    const file = await readFile(sealedFile("enc-1"));
    expect(readHeader(file)).toMatchObject({ encrypted: true, keyId: "t.default:1" });

    // nats-server's own files: the chat's words are nowhere in the store.
    for (const f of await filesUnder(join(stack.nats.storeDir, "jetstream"))) {
      expect((await readListed(f))?.includes(SECRET) ?? false, f).toBe(false);
    }
  });

  it("writes the mirror's wrapped keys when they change, not at every backup, and again when the file is gone", async () => {
    const keysFile = join(root(), "memory-keys.json");
    const inode = async () => (await stat(keysFile).catch(() => null))?.ino ?? null;
    // The tenant's data key exists once a session of it is written, and the keys file then holds it.
    expect(
      (await api("PUT", "/v1/atlas/memory/enc-keys-0", { version: 1, layers: [{ messages: [{ role: "user", content: "0" }] }] })).status,
    ).toBe(201);
    const scopes = async () => (JSON.parse(await readFile(keysFile, "utf8").catch(() => "[]")) as { scope: string }[]).map((w) => w.scope);
    await expect.poll(scopes, { timeout: 10_000 }).toContain("t.default");
    const before = await inode();
    expect(before).not.toBeNull();
    // A backup that writes a session (ATLAS_AUTO_SAVE_INTERVAL=1) leaves the unchanged keys file as it is.
    expect(
      (await api("PUT", "/v1/atlas/memory/enc-keys-1", { version: 1, layers: [{ messages: [{ role: "user", content: "a" }] }] })).status,
    ).toBe(201);
    await expect.poll(() => readFile(sealedFile("enc-keys-1")).catch(() => null), { timeout: 10_000 }).not.toBeNull();
    expect(await inode()).toBe(before);
    // Removed (an operator cleaning the folder): the next backup that writes puts it back.
    await rm(keysFile);
    expect(
      (await api("PUT", "/v1/atlas/memory/enc-keys-2", { version: 1, layers: [{ messages: [{ role: "user", content: "b" }] }] })).status,
    ).toBe(201);
    await expect.poll(inode, { timeout: 10_000 }).not.toBeNull();
  });

  it("seals the KV-state snapshots in L2 and L3, and resumes from them", async () => {
    // One slot: a second session takes it over, so enc-1's state goes to L2 (sealed).
    await chat("enc-2", "Something else entirely.");
    const l2 = (await filesUnder(join(stack.config.ATLAS_DATA_DIR, "l2", worker))).filter((f) => f.endsWith(".kv"));
    expect(l2.length).toBeGreaterThan(0);
    for (const f of l2) {
      const bytes = await readFile(f);
      expect(readHeader(bytes)).toMatchObject({ encrypted: true, keyId: `${KV_STATE_KEY_SCOPE}:1` });
      expect(bytes.includes(SECRET)).toBe(false);
    }
    // Back to enc-1: its state comes from the sealed L2 snapshot.
    const again = await chat("enc-1", "What did I ask you to remember?");
    expect(again.atlas.cache.outcome).toMatch(/l2/);
    // Drained, the worker uploads its snapshots to L3: sealed objects.
    expect((await fetch(`${stack.baseUrl}/v1/atlas/workers/${worker}/drain`, { method: "POST" })).status).toBe(202);
    const store = await new Objm(nc).open(l3Bucket(prefix()));
    await expect.poll(async () => (await store.list()).filter((o) => !o.deleted).length, { timeout: 15_000 }).toBeGreaterThan(0);
    for (const o of (await store.list()).filter((x) => !x.deleted)) {
      const bytes = Buffer.from((await store.getBlob(o.name)) ?? new Uint8Array());
      expect(readHeader(bytes).encrypted).toBe(true);
      expect(bytes.includes(SECRET)).toBe(false);
    }
  });

  it("round-trips through a persistence restart; a wrong or missing key stops the start with a clear error", async () => {
    await stack.stop("persistence");
    await expect(stack.start("persistence", { ATLAS_MEMORY_KEY: K2 })).rejects.toThrow(
      /wrapped by master key .* but the configured key is/,
    );
    await expect(stack.start("persistence", { ATLAS_MEMORY_KEY: "" })).rejects.toThrow(
      /encrypted at rest .* neither ATLAS_MEMORY_KEY nor ATLAS_MEMORY_KEY_FILE/,
    );
    await stack.start("persistence");
    const doc = await api("GET", "/v1/atlas/memory/enc-1");
    expect(doc.status).toBe(200);
    expect(doc.json.layers[0].messages[0].content).toContain(SECRET);
  });

  it("reads old plain records once a key is set, and seals every new write", async () => {
    // A record as persistence wrote it before encryption: the document inline, as JSON.
    const at = new Date().toISOString();
    const doc = {
      version: 1,
      session_id: "legacy-1",
      tenant: "default",
      created_at: at,
      updated_at: at,
      model: null,
      layers: [{ id: "old", created_at: at, messages: [{ role: "user", content: "plain old words" }], usage: null }],
      metadata: {},
    };
    const subject = MemoryLog.subject(prefix(), { tenant: "default", session_id: "legacy-1" });
    const js = (await jetstreamManager(nc)).jetstream();
    await js.publish(subject, JSON.stringify({ v: 2, op: "base", id: "b:legacy", at, doc }));
    expect((await api("GET", "/v1/atlas/memory/legacy-1")).json.layers[0].messages[0].content).toBe("plain old words");
    expect(
      (await api("POST", "/v1/atlas/memory/legacy-1/layers", { id: "new", messages: [{ role: "user", content: "new words" }] })).status,
    ).toBe(202);
    const records = (await rawMessages(memoryNames(prefix()).log))
      .filter((m) => m.subject === subject)
      .map((m) => JSON.parse(m.data.toString()));
    expect(records.at(-1)).toMatchObject({ op: "layer", id: "l:new" });
    expect(records.at(-1).layer).toBeUndefined();
    expect(isSealed(Buffer.from(records.at(-1).sealed, "base64"))).toBe(true);
    expect((await api("GET", "/v1/atlas/memory/legacy-1")).json.layers.map((l: { id: string }) => l.id)).toEqual(["old", "new"]);
    const details = (await persistenceHealth())?.details?.at_rest as { plain_reads: number; encrypted: boolean } | undefined;
    expect(details?.encrypted).toBe(true);
    expect(details?.plain_reads).toBeGreaterThan(0);
  });

  it("refuses a record with one flipped byte and reports it, never serving it", async () => {
    const subject = MemoryLog.subject(prefix(), { tenant: "default", session_id: "enc-1" });
    const last = (await rawMessages(memoryNames(prefix()).log)).filter((m) => m.subject === subject).at(-1);
    const rec = JSON.parse(last?.data.toString() ?? "{}");
    const sealed = Buffer.from(rec.sealed, "base64");
    sealed[sealed.length - 5] = (sealed[sealed.length - 5] as number) ^ 1;
    // Someone with write access to the store puts the changed record back as the session's last.
    const js = (await jetstreamManager(nc)).jetstream();
    await js.publish(subject, JSON.stringify({ ...rec, id: "b:tampered", sealed: sealed.toString("base64") }));
    const r = await api("GET", "/v1/atlas/memory/enc-1");
    expect(r.status).toBe(500);
    expect(JSON.stringify(r.json)).not.toContain(SECRET);
    const health = await persistenceHealth();
    expect(health?.checks.at_rest?.ok).toBe(false);
    expect(health?.checks.at_rest?.detail).toMatch(/[1-9]\d* record\(s\) refused/);
  });

  it("with ATLAS_MEMORY_REQUIRE_SEALED, refuses a plain record as it refuses a changed one, and serves sealed ones", async () => {
    await stack.stop("persistence");
    await expect(stack.start("persistence", { ATLAS_MEMORY_KEY: "", ATLAS_MEMORY_REQUIRE_SEALED: "1" })).rejects.toThrow(
      /ATLAS_MEMORY_REQUIRE_SEALED is set but neither ATLAS_MEMORY_KEY nor ATLAS_MEMORY_KEY_FILE/,
    );
    await stack.start("persistence", { ATLAS_MEMORY_REQUIRE_SEALED: "1" });
    try {
      // legacy-1 begins with the plain record of the test above.
      const r = await api("GET", "/v1/atlas/memory/legacy-1");
      expect(r.status).toBe(500);
      expect(JSON.stringify(r.json)).not.toContain("plain old words");
      const health = await persistenceHealth();
      expect(health?.checks.at_rest?.detail).toMatch(/[1-9]\d* record\(s\) refused/);
      // Sealed data is served as before.
      const add = await api("POST", "/v1/atlas/memory/strict-1/layers", { id: "s1", messages: [{ role: "user", content: "sealed" }] });
      expect(add.status).toBe(202);
      expect((await api("GET", "/v1/atlas/memory/strict-1")).json.layers[0].messages[0].content).toBe("sealed");
      // Someone who can write the store puts a plain record in as the session's newest.
      const at = new Date().toISOString();
      const layer = { id: "slipped", created_at: at, messages: [{ role: "user", content: "slipped in" }], usage: null };
      const subject = MemoryLog.subject(prefix(), { tenant: "default", session_id: "strict-1" });
      await (await jetstreamManager(nc)).jetstream().publish(subject, JSON.stringify({ v: 2, op: "layer", id: "l:slipped", at, layer }));
      await expect.poll(async () => (await api("GET", "/v1/atlas/memory/strict-1")).status, { timeout: 10_000 }).toBe(500);
      expect(JSON.stringify((await api("GET", "/v1/atlas/memory/strict-1")).json)).not.toContain("slipped in");
      // An envelope that is compressed but not encrypted is refused too.
      const add2 = await api("POST", "/v1/atlas/memory/strict-2/layers", { id: "s2", messages: [{ role: "user", content: "sealed" }] });
      expect(add2.status).toBe(202);
      const unencrypted = seal(Buffer.from(JSON.stringify({ ...layer, id: "wrapped" })), { codec: "none" });
      const subject2 = MemoryLog.subject(prefix(), { tenant: "default", session_id: "strict-2" });
      const rec = { v: 2, op: "layer", id: "l:wrapped", at, sealed: Buffer.from(unencrypted).toString("base64") };
      await (await jetstreamManager(nc)).jetstream().publish(subject2, JSON.stringify(rec));
      await expect.poll(async () => (await api("GET", "/v1/atlas/memory/strict-2")).status, { timeout: 10_000 }).toBe(500);
    } finally {
      await stack.stop("persistence");
      await stack.start("persistence");
    }
  });

  it("a worker's user opens the snapshot key alone: a tenant's key is refused, and it cannot write the key check", async () => {
    const c = stack.credentials.get("worker-1");
    const wc = await connect({ servers: stack.nats.url, user: c?.user ?? "", pass: c?.password ?? "" });
    try {
      const log = createLogger({ service: "test", level: "silent", format: "json" });
      const atRest = { ATLAS_MEMORY_KEY: K1, ATLAS_MEMORY_COMPRESSION: "gzip" as const };
      const sealer = await openSnapshotSealer(new BusJetStream(wc), prefix(), atRest, log);
      expect(sealer.keyring?.cached(`${KV_STATE_KEY_SCOPE}:1`)).toBeDefined();
      expect(sealer.keyring?.cached("t.default:1")).toBeUndefined();
      await expect(sealer.keyring?.keyOf("t.default:1")).rejects.toThrow(/not one this service holds/);
      await expect(sealer.seal("t.default", new Uint8Array(8))).rejects.toThrow(/not one this service holds/);
      // Without a key check (a store persistence has not made yet), the worker waits instead of writing one.
      const check = `$KV.${memoryKeysBucket(prefix())}.check`;
      stack.allowViolations((line) => line.includes('User "worker-1"') && line.includes(`"${check}"`));
      const keys = await new Kvm(nc).open(memoryKeysBucket(prefix()));
      const saved = await keys.get("check");
      await keys.delete("check");
      let opened = false;
      const waiting = openSnapshotSealer(new BusJetStream(wc), prefix(), atRest, log, 100).then((s) => {
        opened = true;
        return s;
      });
      await expect.poll(() => stack.violations().filter((v) => v.includes(`"${check}"`)).length, { timeout: 10_000 }).toBeGreaterThan(1);
      expect(opened).toBe(false);
      await keys.put("check", saved?.value ?? new Uint8Array()); // persistence writes it
      expect((await waiting).encrypted).toBe(true);
    } finally {
      await wc.close();
    }
  });

  it("rotates the master key without rewriting the data", async () => {
    const kv = await new Kvm(nc).open(memoryKeysBucket(prefix()));
    const before = (await rawMessages(memoryNames(prefix()).log)).length;
    const config = loadConfig({ ...process.env, ATLAS_MEMORY_KEY: K2, ATLAS_MEMORY_KEY_PREVIOUS: K1 });
    const out = await memoryKeyCommand("rotate", config, kv);
    expect(out.join("\n")).toMatch(/re-wrapped [1-9]\d* data key\(s\)/);
    const status = await memoryKeyCommand("status", loadConfig({ ...process.env, ATLAS_MEMORY_KEY: K2 }), kv);
    const k2 = keyCheckValue(Buffer.from(K2, "base64"));
    const dataKeys = status.filter((l) => l.startsWith("data key"));
    expect(dataKeys.length).toBeGreaterThanOrEqual(2); // the tenant's and the snapshots'
    for (const l of [status[0], ...dataKeys]) expect(l).toContain(k2);
    expect((await rawMessages(memoryNames(prefix()).log)).length).toBe(before); // no record rewritten
    // The command line says the same (`npm run memory-key -- status`).
    const cli = spawnSync(
      process.execPath,
      ["--conditions=development", "--import", "tsx", "services/persistence/src/memory_key.ts", "status"],
      {
        cwd: REPO,
        env: { ...process.env, NATS_URL: stack.nats.url, ATLAS_NATS_PREFIX: prefix(), ATLAS_MEMORY_KEY: K2 },
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`wrapped by:  ${k2}`);

    await stack.stop("persistence");
    await expect(stack.start("persistence")).rejects.toThrow(/wrapped by master key/); // K1 alone no longer opens them
    await stack.start("persistence", { ATLAS_MEMORY_KEY: K2 });
    expect((await api("GET", "/v1/atlas/memory/enc-big")).json.layers[0].messages[0].content).toContain(BIG_SECRET);
    // The mirror's copy of the wrapped keys is rewritten at start: wrapped by the new key only.
    const backedUp = JSON.parse(await readFile(join(root(), "memory-keys.json"), "utf8")) as { scope: string; master: string }[];
    expect(backedUp.map((w) => w.scope).sort()).toEqual([KV_STATE_KEY_SCOPE, TRANSIT_KEY_SCOPE, "t.default"]);
    for (const w of backedUp) expect(w.master).toBe(k2);
  });

  it("imports the exported mirror into a wiped store, restoring the data keys; a changed file is reported, not imported", async () => {
    await stack.stop("persistence"); // writes what is still pending
    await stack.restartNats({
      whileDown: async (storeDir) => {
        await rm(join(storeDir, "jetstream"), { recursive: true, force: true });
        const bytes = await readFile(sealedFile("enc-2"));
        bytes[bytes.length - 3] = (bytes[bytes.length - 3] as number) ^ 1;
        await writeFile(sealedFile("enc-2"), bytes);
        // A plain file from before encryption (or from an unencrypted cluster's export).
        const at = new Date().toISOString();
        const plain = { version: 1, session_id: "legacy-2", tenant: "default", created_at: at, updated_at: at, model: null, metadata: {} };
        const layers = [{ id: "p", created_at: at, messages: [{ role: "user", content: "from a plain export" }], usage: null }];
        await writeFile(join(root(), "default", "legacy-2.json"), JSON.stringify({ ...plain, layers }));
      },
    });
    await stack.start("persistence", { ATLAS_MEMORY_KEY: K2 });
    await expect.poll(async () => (await api("GET", "/v1/atlas/memory/enc-big")).status, { timeout: 15_000 }).toBe(200);
    const big = await api("GET", "/v1/atlas/memory/enc-big");
    expect(big.json.layers[0].messages[0].content).toContain(BIG_SECRET);
    expect((await api("GET", "/v1/atlas/memory/legacy-1")).json.layers).toHaveLength(2);
    expect((await api("GET", "/v1/atlas/memory/enc-2")).status).toBe(404);
    // The plain file is imported, then written back sealed, and the plain file removed.
    expect((await api("GET", "/v1/atlas/memory/legacy-2")).json.layers[0].messages[0].content).toBe("from a plain export");
    await expect.poll(() => readFile(sealedFile("legacy-2")).then(isSealed, () => false), { timeout: 10_000 }).toBe(true);
    await expect
      .poll(() =>
        readFile(join(root(), "default", "legacy-2.json")).then(
          () => "there",
          () => "gone",
        ),
      )
      .toBe("gone");
    const health = await persistenceHealth();
    expect(health?.checks.import?.detail).toContain("enc-2.sealed");
    const mirror = health?.details?.mirror as { import?: { corrupt: { reason: string }[] } } | undefined;
    const corrupt = mirror?.import?.corrupt ?? [];
    expect(corrupt.map((c) => c.reason).join()).toMatch(/cannot be opened: .*failed authentication/);
  });
});
