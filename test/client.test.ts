/**
 * `@atlas/client` (libs/client) against a real cluster: nats-server, the five services, a worker
 * on the tiny model, the api with keys.
 *
 * - every example of libs/client/examples runs as its own process (`node --conditions=development
 *   --import tsx`, the stack's URL and key in its environment), as docs/client.md shows them, and
 *   prints what it should;
 * - each method directly: chat (streamed or not) with `atlas`, memory CRUD, status, metrics, drain,
 *   and their errors as `AtlasError`s (401, 403, 404, 412, timeout, connection refused, aborted);
 * - the metrics subscription resumes with `Last-Event-ID` after its connection drops (the api is
 *   stopped and started again on the same port): no snapshot skipped or repeated.
 *
 * The package's boundaries (its schemas against the api's, its imports) are checked without a
 * cluster in libs/client/src/package.test.ts.
 */
import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { Bus } from "@atlas/bus";
import { AtlasClient, AtlasError, AtlasOptions, AtlasResponse, type MetricsStreamEvent, type ReconnectInfo } from "@atlas/client";
import { subscribeMetricsOverNats } from "@atlas/client/nats";
import { ATLAS_VERSION, MetricsSnapshotEvent } from "@atlas/contracts";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO, type Stack, startStack, waitFor } from "./helpers/stack.ts";

const ADMIN = "sk-client-admin";
const TENANT = "sk-client-alpha";
const MODEL = "atlas-tiny";
let stack: Stack;
let admin: AtlasClient;
let tenant: AtlasClient;
/** The test's own NATS connection (the unrestricted test user), to watch the snapshots published. */
let bus: Bus;

beforeAll(async () => {
  stack = await startStack({
    env: { ATLAS_API_KEYS: `${ADMIN}:ops:admin,${TENANT}:alpha`, ATLAS_METRICS_INTERVAL: "100" },
  });
  admin = new AtlasClient({ baseURL: stack.baseUrl, apiKey: ADMIN, timeout: 30_000 });
  tenant = new AtlasClient({ baseURL: `${stack.baseUrl}/v1`, apiKey: TENANT, timeout: 30_000 });
  bus = await Bus.connect({
    servers: stack.nats.url,
    prefix: stack.config.ATLAS_NATS_PREFIX,
    service: { name: "test", version: ATLAS_VERSION },
    discoverable: false,
  });
}, 120_000);
afterAll(async () => {
  await bus?.close();
  await stack?.close();
});

/** Runs an example as docs/client.md does; resolves with its output, rejects on a non-zero exit. */
async function runExample(name: string, env: Record<string, string> = {}): Promise<string> {
  const script = join(REPO, "libs/client/examples", `${name}.ts`);
  const { stdout } = await promisify(execFile)(process.execPath, ["--conditions=development", "--import", "tsx", script], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ATLAS_BASE_URL: stack.baseUrl, ATLAS_API_KEY: ADMIN, ...env },
    timeout: 120_000,
  });
  return stdout;
}

/** The error a promise rejects with, which must be an AtlasError. */
async function atlasError(p: Promise<unknown>): Promise<AtlasError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AtlasError);
  return err as AtlasError;
}

describe("the examples (libs/client/examples)", () => {
  it("chat.ts: two turns in one session, the second recalls the first", async () => {
    const out = await runExample("chat");
    expect(out).toMatch(/^user: My name is Ada\.$/m);
    expect(out).toMatch(/^assistant: ".*"$/m);
    const atlas = [...out.matchAll(/^atlas: cache=(\S+) memory_layers=(\d+) workers=(\S+)$/gm)];
    expect(atlas).toHaveLength(2);
    expect(atlas.map((m) => Number(m[2]))).toEqual([0, 1]);
    expect(atlas[0]?.[3]).toBe("worker-1");
  }, 120_000);

  it("stream.ts: the text, then usage and atlas from the last chunk", async () => {
    const out = await runExample("stream");
    expect(out).toMatch(/^usage: \d+ completion tokens in \d+ chunks$/m);
    expect(out).toMatch(/^atlas: total_ms=[\d.]+ cache=(l1|l2|l3|miss)$/m);
  }, 120_000);

  it("memory.ts: import, append, list, export, replace at a revision, delete", async () => {
    const out = await runExample("memory");
    expect(out).toMatch(/^imported: example-memory-\d+ created=true layers=1$/m);
    expect(out).toMatch(/^appended: layer_\w+ (stored|queued)$/m);
    expect(out).toMatch(/^listed: found$/m);
    expect(out).toMatch(/^exported: 2 layers at revision \d+$/m);
    expect(out).toMatch(/^replaced: 1 layer\(s\)$/m);
    expect(out).toMatch(/^deleted: true$/m);
    expect(out).toMatch(/^after delete: 404 session_not_found$/m);
  }, 120_000);

  it("metrics.ts: three consecutive snapshots, then where to resume", async () => {
    const out = await runExample("metrics");
    const seqs = [...out.matchAll(/^snapshot (\d+): 1 worker\(s\), \d+ request\(s\) so far$/gm)].map((m) => Number(m[1]));
    expect(seqs).toHaveLength(3);
    expect(seqs).toEqual([seqs[0], (seqs[0] ?? 0) + 1, (seqs[0] ?? 0) + 2]);
    expect(out).toContain(`resume from: ${seqs[2]}`);
  }, 120_000);

  it("metrics_nats.ts: three consecutive snapshots straight from NATS", async () => {
    const out = await runExample("metrics_nats", { NATS_URL: stack.nats.url, ATLAS_NATS_PREFIX: stack.config.ATLAS_NATS_PREFIX });
    const seqs = [...out.matchAll(/^snapshot (\d+) of \S+: 1 worker\(s\)$/gm)].map((m) => Number(m[1]));
    expect(seqs).toEqual([seqs[0], (seqs[0] ?? 0) + 1, (seqs[0] ?? 0) + 2]);
  }, 120_000);

  it("admin.ts: the status of every service (the drain is run last, below)", async () => {
    const out = await runExample("admin");
    expect(out).toMatch(/^status: (ok|degraded) \(version \d+\.\d+\.\d+\)$/m);
    for (const service of ["api", "scheduler", "inference-worker", "metrics", "persistence"]) {
      expect(out).toMatch(new RegExp(`^  ${service}: \\S+=(ok|degraded)`, "m"));
    }
    expect(out).not.toContain("drained:");
  }, 120_000);
});

describe("generation", () => {
  it("sends atlas with a chat completion and types the atlas answer", async () => {
    const options: AtlasOptions = { session_id: `client-${Date.now()}`, cache_strategy: "lfu", memory_layers: 2 };
    const r = await admin.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 4,
      atlas: options,
    });
    expect(r.object).toBe("chat.completion");
    // The server answers `atlas` only when the request carried it: proof it was sent.
    expect(AtlasResponse.parse(r.atlas).session_id).toBe(options.session_id);
    await admin.memory.delete(options.session_id ?? "");
  });

  it("streams chunks, the last one with usage and atlas", async () => {
    const stream = await tenant.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
      atlas: { batch_size: 1 },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    const last = chunks.at(-1);
    expect(last?.usage?.completion_tokens).toBeGreaterThan(0);
    expect(AtlasResponse.parse(last?.atlas).workers).toEqual(["worker-1"]);
  });

  it("sends atlas with a text completion", async () => {
    const r = await tenant.completions.create({ model: MODEL, prompt: "Once", max_tokens: 2, atlas: { batch_size: 1 } });
    expect(r.object).toBe("text_completion");
    expect(AtlasResponse.parse(r.atlas).cache.outcome).toMatch(/^(l1|l2|l3|miss)$/);
  });

  it("has the atlas options typed from the schema (a wrong one does not compile) and the server refuses what the schema refuses", async () => {
    const typed = (atlas: AtlasOptions) => atlas;
    // @ts-expect-error: not a cache strategy
    typed({ cache_strategy: "fifo" });
    // @ts-expect-error: not an option
    typed({ sessionId: "s" });
    expect(AtlasOptions.safeParse({ memory_layers: 11 }).success).toBe(false);
    const err = await tenant.openai.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 2, atlas: { memory_layers: 11 } } as never)
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400, error: { code: "invalid_value", param: "atlas.memory_layers" } });
  });
});

describe("memory", () => {
  const id = `client-memory-${Date.now()}`;
  const exchange = [
    { role: "user" as const, content: "Hi" },
    { role: "assistant" as const, content: "Hello" },
  ];

  it("puts, appends, lists, gets, replaces at a revision and deletes, each answer parsed", async () => {
    const put = await tenant.memory.put(id, { version: 1, layers: [{ id: "one", messages: exchange }], metadata: { k: "v" } });
    expect(put).toMatchObject({ created: true, session: { object: "atlas.memory.session", id, layers: 1 } });
    expect((await tenant.memory.put(id, { version: 1, layers: [{ id: "one", messages: exchange }] })).created).toBe(false);

    const appended = await tenant.memory.append(id, { id: "two", messages: exchange, model: MODEL });
    expect(appended).toEqual({ object: "atlas.memory.layer", id: "two", session_id: id, status: "stored" });

    const { document, revision } = await tenant.memory.get(id);
    expect(document.tenant).toBe("alpha");
    expect(document.layers.map((l) => l.id)).toEqual(["one", "two"]);
    expect(revision).toBeGreaterThan(0);
    expect(await tenant.memory.export(id)).toEqual(document);

    // The same document imported under another id: a backup restored.
    const copy = `${id}-copy`;
    expect((await tenant.memory.import(copy, { ...document, session_id: copy })).session.layers).toBe(2);
    const ids: string[] = [];
    for await (const s of tenant.memory.listAll({ limit: 1 })) ids.push(s.id);
    expect(ids).toEqual(expect.arrayContaining([id, copy]));
    expect(ids).toEqual([...ids].sort());

    const replaced = await tenant.memory.put(id, { ...document, layers: document.layers.slice(0, 1) }, { ifRevision: revision });
    expect(replaced.session.layers).toBe(1);
    const stale = await atlasError(tenant.memory.put(id, document, { ifRevision: revision }));
    expect(stale).toMatchObject({ status: 412, code: "revision_mismatch", param: "If-Match" });

    expect(await tenant.memory.delete(copy)).toEqual({ id: copy, object: "atlas.memory.session.deleted", deleted: true });
    await tenant.memory.delete(id);
    const gone = await atlasError(tenant.memory.get(id));
    expect(gone).toMatchObject({ status: 404, code: "session_not_found", type: "not_found_error", param: "session_id", retryable: false });
    expect(gone.body.error.message).toContain(id);
    expect(gone.requestId).toMatch(/\S/);
  });

  it("keeps tenants apart: another tenant's session is a 404, ?tenant= needs an admin key", async () => {
    await tenant.memory.put(id, { version: 1, layers: [{ messages: exchange }] });
    expect((await atlasError(admin.memory.get(id))).code).toBe("session_not_found");
    expect((await admin.memory.get(id, { tenant: "alpha" })).document.tenant).toBe("alpha");
    expect(await atlasError(tenant.memory.list({ tenant: "ops" }))).toMatchObject({ status: 403, code: "admin_required" });
    await tenant.memory.delete(id);
  });

  it("refuses bad input with the server's error (param named), never a client-side guess", async () => {
    const bad = await atlasError(tenant.memory.append("bad id", { messages: exchange }));
    expect(bad).toMatchObject({ status: 400, code: "invalid_value", param: "session_id" });
    const empty = await atlasError(tenant.memory.append(id, { messages: [] }));
    expect(empty).toMatchObject({ status: 400, param: "messages" });
  });
});

describe("status, errors of every call", () => {
  it("answers the status: the summary for a tenant key, every instance for an admin key", async () => {
    const brief = await tenant.status();
    expect(brief.status).toMatch(/^(ok|degraded)$/);
    expect(brief.services).toBeUndefined();
    const full = await admin.status();
    expect(full.nats?.connected).toBe(true);
    expect(full.services?.["inference-worker"]?.map((i) => i.instance)).toEqual(["worker-1"]);
    expect(full.api).toBeDefined();
  });

  it("is a 401 without a key or with an unknown one, a 403 for a cluster operation with a tenant key", async () => {
    const none = new AtlasClient({ baseURL: stack.baseUrl });
    expect(await atlasError(none.status())).toMatchObject({ status: 401, code: "invalid_api_key", type: "authentication_error" });
    const wrong = new AtlasClient({ baseURL: stack.baseUrl, apiKey: "sk-nobody" });
    expect(await atlasError(wrong.memory.list())).toMatchObject({ status: 401, code: "invalid_api_key" });
    expect(await atlasError(tenant.metrics.get())).toMatchObject({ status: 403, code: "admin_required", type: "permission_error" });
    expect(await atlasError(tenant.workers.drain("worker-1"))).toMatchObject({ status: 403, code: "admin_required" });
    // The stream's connect fails the same way, once, without retrying a 4xx.
    let retried = 0;
    const sub = tenant.metrics.subscribe({ onReconnect: () => retried++ });
    expect(await atlasError(sub.next())).toMatchObject({ status: 403, code: "admin_required" });
    expect(retried).toBe(0);
  });

  it("says invalid_response for an answer its schema refuses, and sends through the fetch it was given", async () => {
    // The given fetch sends the status request to the liveness probe, whose `{status: "ok"}` lacks `version`.
    const urls: string[] = [];
    const probe = new AtlasClient({
      baseURL: stack.baseUrl,
      apiKey: ADMIN,
      fetch: (input, init) => {
        urls.push(String(input));
        return fetch(String(input).replace("/v1/atlas/status", "/health"), init);
      },
    });
    const err = await atlasError(probe.status());
    expect(err).toMatchObject({ status: 200, code: "invalid_response", retryable: false });
    expect(err.message).toContain("version");
    expect(urls).toEqual([`${stack.baseUrl}/v1/atlas/status`]);
  });

  it("is a 404 for an unknown worker to drain", async () => {
    expect(await atlasError(admin.workers.drain("nope"))).toMatchObject({ status: 404, code: "not_found" });
  });

  it("says timeout, connection_error and aborted when no answer comes", async () => {
    // The status asks every instance over NATS (discovery alone waits 250 ms): never within 20 ms.
    const slow = new AtlasClient({ baseURL: stack.baseUrl, apiKey: ADMIN, timeout: 20 });
    expect(await atlasError(slow.status())).toMatchObject({ status: 0, code: "timeout", retryable: true });

    const port = await closedPort();
    const nobody = new AtlasClient({ baseURL: `http://127.0.0.1:${port}`, apiKey: ADMIN });
    expect(await atlasError(nobody.memory.list())).toMatchObject({ status: 0, code: "connection_error", retryable: true });

    const ac = new AbortController();
    ac.abort();
    expect(await atlasError(admin.status({ signal: ac.signal }))).toMatchObject({ status: 0, code: "aborted", retryable: false });
  });
});

/** A port nothing listens on (one that was just free). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

describe("metrics", () => {
  it("answers the current view and the Prometheus text", async () => {
    const view = await admin.metrics.get({ window: "10s" });
    expect(view).toMatchObject({ object: "atlas.metrics", window: "10s" });
    expect(view.seq).toBeGreaterThan(0);
    expect(await admin.metrics.prometheus()).toMatch(/^# (HELP|TYPE) atlas_/m);
  });

  it("resumes the stream with Last-Event-ID after its connection drops (the api restarts): no snapshot skipped or repeated", async () => {
    const ac = new AbortController();
    const events: MetricsStreamEvent[] = [];
    const reconnects: { info: ReconnectInfo; seen: number }[] = [];
    const sub = admin.metrics.subscribe({
      signal: ac.signal,
      retryDelayMs: 100,
      maxRetries: 200,
      onReconnect: (info) => reconnects.push({ info, seen: events.length }),
    });
    const take = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const r = await sub.next();
        if (r.done === true) throw new Error("The subscription ended");
        events.push(r.value);
      }
    };
    await take(3);
    // Drop the connection for real: stop the api (it closes its streams), let the metrics service
    // publish three more snapshots meanwhile (seen on NATS), start the api on the same port.
    const port = new URL(stack.baseUrl).port;
    const last = events.flatMap((e) => (e.type === "snapshot" ? [e.snapshot.seq] : [])).at(-1) ?? 0;
    await stack.stop("api");
    let published = 0;
    const watch = bus.subscribe(
      MetricsSnapshotEvent,
      (snap) => {
        published = Math.max(published, snap.seq);
      },
      {},
    );
    await waitFor(() => published >= last + 3, { what: "three snapshots while the api is down" });
    watch.unsubscribe();
    await stack.start("api", { PORT: port });
    await take(3);
    while (reconnects.length === 0 || events.length < reconnects[0]!.seen + 5) await take(1);
    ac.abort();
    expect((await sub.next()).done).toBe(true);

    const first = reconnects[0]!;
    const before = events.slice(0, first.seen).filter((e) => e.type === "snapshot");
    expect(first.info.lastEventId).toBe(before.at(-1)?.id);
    expect(first.info.error.retryable).toBe(true);
    expect(events.filter((e) => e.type === "reset")).toEqual([]);
    const seqs = events.flatMap((e) => (e.type === "snapshot" ? [e.snapshot.seq] : []));
    expect(seqs).toEqual(seqs.map((_, i) => (seqs[0] ?? 0) + i));
    // The snapshots published while the api was down came from the metrics service's history.
    expect(seqs).toEqual(expect.arrayContaining([last + 1, last + 2, last + 3]));
  }, 60_000);

  it("subscribes straight over NATS on a connection of one's own, and stops on abort", async () => {
    const nc = await connect({ servers: stack.nats.url });
    const ac = new AbortController();
    const seqs: number[] = [];
    for await (const s of subscribeMetricsOverNats({ connection: nc, prefix: stack.config.ATLAS_NATS_PREFIX, signal: ac.signal })) {
      seqs.push(s.seq);
      if (seqs.length === 3) ac.abort();
    }
    expect(seqs).toEqual([seqs[0], (seqs[0] ?? 0) + 1, (seqs[0] ?? 0) + 2]);
    expect(nc.isClosed()).toBe(false); // a connection of one's own stays open
    await nc.close();
  });

  it("says reset for an id that is not one, then goes on from the newest", async () => {
    const ac = new AbortController();
    const seen: MetricsStreamEvent[] = [];
    for await (const e of admin.metrics.subscribe({ signal: ac.signal, lastEventId: "not-a-seq" })) {
      seen.push(e);
      if (seen.length === 2) ac.abort();
    }
    expect(seen[0]).toMatchObject({ type: "reset", reset: { reason: "unknown", last_event_id: "not-a-seq" } });
    expect(seen[1]?.type).toBe("snapshot");
  });
});

describe("worker drain (last: the worker stops taking leases)", () => {
  it("admin.ts with ATLAS_DRAIN_WORKER drains the worker; the scheduler says so", async () => {
    const out = await runExample("admin", { ATLAS_DRAIN_WORKER: "worker-1" });
    expect(out).toMatch(/^drained: worker-1 draining=true$/m);
    const workers = (await admin.status()).scheduler?.workers as { worker_id: string; draining: boolean }[];
    expect(workers.find((w) => w.worker_id === "worker-1")?.draining).toBe(true);
  }, 120_000);
});
