/**
 * Fault: nats-server crashes (SIGKILL: no clean JetStream shutdown) under load, and starts again
 * on the same port and store with the same users and permissions. (A graceful SIGTERM restart is
 * the milder case of the same path; `test/memory_restore.test.ts` restarts it gracefully.)
 *
 * Load: two lanes of chat turns with `atlas.session_id` (recall, a scheduler lease, a memory append
 * after the answer), one lane of direct appends (`POST …/layers`) and imports (`PUT`), and a lease
 * the test holds through the crash.
 *
 * The bound: a request that overlaps the outage (in flight at the kill, or sent before the cluster
 * is back) may fail, but only cleanly: 503 or 504 with an OpenAI error body. A request that ended
 * before the kill, or started after the cluster is back, must succeed. A broken connection (status
 * 0: the fetch threw) or a 500 is a failure anywhere. "Back": `/v1/atlas/status` ok with nothing
 * missing, every breaker of the api closed, and a chat turn answered under a lease, not degraded.
 *
 * Acknowledged appends: an append is acknowledged once it is durable: persistence stored it, or
 * JetStream holds it for persistence in the append stream (file storage; persistence acks a message
 * only after applying it, `services/persistence/src/appends.ts`). A direct append is answered 202
 * only then. A chat turn's append is made after the answer, so its 200 comes first: the api keeps
 * retrying it and writes the audit record `memory.write` `ok`, naming the layer, once it is
 * durable. Every acknowledged append is in its session afterwards, every 200 turn gets
 * acknowledged, and a burst of appends right before the kill (acknowledged, mostly not yet applied)
 * is applied after the restart.
 *
 * Lease records: every lease record in the scheduler's KV bucket (file storage) just before the
 * kill is still there after the restart, or was released properly (a delete or purge marker, never
 * a gap).
 */
import { Bus, type BusError, type NatsBus } from "@atlas/bus";
import { LeaseAcquire, LeaseRelease, LeaseRenew, memoryNames } from "@atlas/contracts";
import { jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callApi } from "./helpers/http.ts";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;
let own: NatsBus | undefined; // the test's own connection

type Phase = "before" | "outage" | "after";
let phase: Phase = "before";
type ErrorBody = { error?: { message: string; type: string; param: string | null; code: string | null } };
interface Result {
  kind: string;
  status: number;
  degraded: string | null;
  requestId: string | null;
  json: unknown;
  started: Phase;
  ended: Phase;
}
/** The api's `memory.write` audit records by layer: outcome, and the phase it was logged in. */
const appendAudit = new Map<string, { outcome: string; phase: Phase }>();

async function call(kind: string, method: string, path: string, body?: unknown): Promise<Result> {
  const started = phase;
  // The timeout only keeps a hung request from hanging the test (it counts as status 0).
  const r = await callApi(stack.baseUrl, method, path, body, 60_000);
  return { ...r, kind, started, ended: phase };
}

function chatBody(content: string, atlas: Record<string, unknown>) {
  return { model: MODEL, messages: [{ role: "user", content }], max_tokens: 4, atlas };
}

/** Runs `read` over a fresh connection of the test's own; `undefined` when what it reads is gone. */
async function withNats<T>(read: (nc: NatsConnection) => Promise<T>): Promise<T | undefined> {
  const nc = await connect({ servers: stack.nats.url });
  try {
    return await read(nc);
  } catch (err) {
    if (err instanceof Error && /not found/i.test(err.message)) return undefined;
    throw err;
  } finally {
    await nc.close();
  }
}

/** Reads the scheduler's KV bucket (`services/scheduler/src/store.ts`). */
function leaseBucket<T>(read: (kv: KV) => Promise<T>): Promise<T | undefined> {
  return withNats(async (nc) => read(await new Kvm(nc).open(`${stack.config.ATLAS_NATS_PREFIX.replaceAll(".", "_")}_scheduler_state`)));
}

/** A lease record as the scheduler keeps it: under `lease.<…>` (per lease or per slot), the lease as JSON. */
type LeaseRecord = { lease_id: string; fencing_token: number };

/** The bucket's last sequence and its live lease records, by KV key. */
async function leaseRecords(): Promise<{ lastSeq: number; live: Map<string, LeaseRecord> }> {
  const got = await leaseBucket(async (kv) => {
    const live = new Map<string, LeaseRecord>();
    for await (const key of await kv.keys("lease.>")) {
      const e = await kv.get(key);
      if (e?.operation === "PUT") live.set(key, e.json() as LeaseRecord);
    }
    return { lastSeq: (await kv.status()).streamInfo.state.last_seq, live };
  });
  return got ?? { lastSeq: 0, live: new Map() };
}

/** Whether a lease's record is live in `records`, with its fencing token. */
function holds(records: { live: Map<string, LeaseRecord> }, lease: LeaseRecord): boolean {
  return [...records.live.values()].some((r) => r.lease_id === lease.lease_id && r.fencing_token === lease.fencing_token);
}

/** What a record's key holds now: PUT (a lease), DEL or PURGE (released), `missing` (lost). */
async function leaseRecord(key: string): Promise<string> {
  return (await leaseBucket(async (kv) => (await kv.get(key))?.operation)) ?? "missing";
}

/** Appends the append stream holds (a work queue: stored, not yet acked by persistence); -1 when it is gone. */
async function appendBacklog(): Promise<number> {
  const name = memoryNames(stack.config.ATLAS_NATS_PREFIX).stream;
  return (await withNats(async (nc) => (await (await jetstreamManager(nc)).streams.info(name)).state.messages)) ?? -1;
}

// biome-ignore lint/suspicious/noExplicitAny: the status and metrics bodies are checked with matchers
async function getJson(path: string): Promise<any> {
  return (await call("read", "GET", path)).json;
}

async function layerIds(session: string): Promise<Set<string>> {
  const doc = (await call("read", "GET", `/v1/atlas/memory/${session}`)).json as { layers?: { id: string }[] };
  return new Set((doc.layers ?? []).map((l) => l.id));
}

/** Chat requests and worker generations the metrics service counted. */
async function metricCounts(): Promise<{ chat: number; generations: number }> {
  const m = await getJson("/v1/atlas/metrics");
  const requests = (m.totals?.requests ?? {}) as Record<string, number>;
  const workers = (m.totals?.workers ?? {}) as Record<string, { generations: number }>;
  return {
    chat: Object.entries(requests).reduce((s, [k, n]) => (k.startsWith("chat.completions|") ? s + n : s), 0),
    generations: Object.values(workers).reduce((s, w) => s + w.generations, 0),
  };
}

beforeAll(async () => {
  stack = await startStack({
    env: { ATLAS_SLOTS: "3" },
    logLevel: "info",
    logDestination: {
      write: (line) => {
        if (!line.includes('"memory.write"')) return;
        let r: { layer?: string; outcome?: string } = {};
        try {
          r = JSON.parse(line);
        } catch {}
        if (r.layer === undefined || appendAudit.get(r.layer)?.outcome === "ok") return;
        appendAudit.set(r.layer, { outcome: String(r.outcome), phase });
      },
    },
  });
  for (let s = 0; s < 2; s++) {
    const seed = { version: 1, layers: [{ id: "seed", messages: [{ role: "user", content: "seed" }] }] };
    expect((await call("seed", "PUT", `/v1/atlas/memory/nw-${s}`, seed)).status).toBe(201);
  }
  // The api knows the model before the load starts (its catalog comes from discovery).
  await waitFor(async () => (await getJson("/v1/models")).data?.length === 1, { timeoutMs: 30_000, what: "the model catalog" });
}, 90_000);
afterAll(async () => {
  await own?.close();
  await stack?.close();
});

describe("nats-server killed (SIGKILL) under load", () => {
  it("reconnects every service, fails only requests that overlap the outage, and loses no acknowledged append or lease record", async () => {
    const results: Result[] = [];
    const turns: { session: string; layer: string; started: Phase }[] = []; // chat turns answered 200
    const direct: { session: string; layer: string; started: Phase }[] = []; // direct appends answered 202
    const imported: string[] = [];
    let stop = false;
    /** Chat turns whose append was acknowledged (durable) while in phase `p`, per the api's audit record. */
    const acked = (p: Phase) =>
      turns.filter((t) => appendAudit.get(t.layer)?.outcome === "ok" && appendAudit.get(t.layer)?.phase === p).length;
    const sinceBack = (list: { started: Phase }[]) => list.filter((x) => x.started === "after").length;

    // Every in-process service's own connection: it must see the crash and reconnect.
    const buses = [...stack.running.entries()].flatMap(([key, list]) => list.map((r) => ({ key, bus: r.bus })));
    const seen = buses.map(({ key, bus }) => {
      const events = { key, disconnect: 0, reconnect: 0 };
      void (async () => {
        for await (const s of bus.nc.status()) if (s.type === "disconnect" || s.type === "reconnect") events[s.type] += 1;
      })();
      return events;
    });

    // A lease the test holds through the crash, over its own connection (the unrestricted `test`
    // user: a service's connection may only do what the service does).
    const mine = await Bus.connect({
      servers: stack.nats.url,
      prefix: stack.config.ATLAS_NATS_PREFIX,
      service: { name: "faults-nats-test", version: "0.0.0" },
      discoverable: false,
    });
    own = mine;
    const ask = { request_id: "held", holder: "faults-nats-test", tenant: "default", model: MODEL, session: null, count: 1 };
    const [held] = (await mine.call(LeaseAcquire, { ...ask, strategy: "lru", wait_ms: 10_000, ttl_ms: 600_000 })).leases;
    if (held === undefined) throw new Error("no lease");

    const chatLane = async (lane: number) => {
      for (let i = 0; !stop; i++) {
        const session = `nc-${lane}-${i % 2}`;
        const r = await call(
          "chat",
          "POST",
          "/v1/chat/completions",
          chatBody(`turn ${lane}.${i}`, { session_id: session, memory_layers: 2 }),
        );
        results.push(r);
        if (r.status === 200 && r.requestId !== null) turns.push({ session, layer: r.requestId, started: r.started });
        if (r.status !== 200) await new Promise((res) => setTimeout(res, 100));
      }
    };
    const writerLane = async () => {
      for (let i = 0; !stop; i++) {
        const session = `nw-${i % 2}`;
        const layer = `w-${i}`;
        const r = await call("append", "POST", `/v1/atlas/memory/${session}/layers`, {
          id: layer,
          messages: [{ role: "user", content: `write ${i}` }],
        });
        results.push(r);
        if (r.status === 202) direct.push({ session, layer, started: r.started });
        if (i % 5 === 0) {
          const put = await call("import", "PUT", `/v1/atlas/memory/imp-${i}`, {
            version: 1,
            layers: [{ messages: [{ role: "user", content: "x" }] }],
          });
          results.push(put);
          if (put.status === 201) imported.push(`imp-${i}`);
        }
        // Paced, so that the chat lanes get the cores too (a steady load, not a flood).
        await new Promise((res) => setTimeout(res, r.status === 202 ? 50 : 100));
      }
    };
    const load = Promise.all([chatLane(0), chatLane(1), writerLane()]);

    let statusBefore: Awaited<ReturnType<typeof getJson>>;
    const appliedBefore = new Map<string, Set<string>>(); // layers persistence had applied before the kill
    let kvBefore = { lastSeq: 0, live: new Map<string, LeaseRecord>() };
    let kvRestarted = kvBefore;
    let metricsBack = { chat: 0, generations: 0 };
    let backlogAtRestart = 0;
    try {
      // Under way: turns answered and their appends stored, direct appends acknowledged, and the
      // held lease's record in KV (the scheduler may write lease records behind the grant).
      await expect
        .poll(() => ({ turns: turns.length, acked: acked("before"), direct: direct.length }), { timeout: 30_000 })
        .toSatisfy((n: { turns: number; acked: number; direct: number }) => n.turns >= 4 && n.acked >= 2 && n.direct >= 4);
      await expect.poll(async () => holds(await leaseRecords(), held), { timeout: 10_000 }).toBe(true);
      statusBefore = await getJson("/v1/atlas/status");
      for (const t of turns) appliedBefore.set(t.session, await layerIds(t.session));
      kvBefore = await leaseRecords();
      // A burst of direct appends, acknowledged (202) just before the kill: most are not applied yet.
      const burst = await Promise.all(
        Array.from({ length: 40 }, (_, k) =>
          call("append", "POST", `/v1/atlas/memory/nb-${k % 4}/layers`, {
            id: `b-${k}`,
            messages: [{ role: "user", content: `burst ${k}` }],
          }),
        ),
      );
      burst.forEach((r, k) => {
        results.push(r);
        if (r.status === 202) direct.push({ session: `nb-${k % 4}`, layer: `b-${k}`, started: r.started });
      });

      phase = "outage";
      await stack.restartNats({ crash: true, downMs: 1000 });
      backlogAtRestart = await appendBacklog(); // read at once: what the crash left in the stream

      // Lease records as the crash left them (read at once): KV is on file storage, so every record
      // live before the kill is still there (or, if the scheduler reconnected first, released: a
      // delete or purge marker, never a gap), and the bucket's sequence never went back.
      kvRestarted = await leaseRecords();
      expect(kvRestarted.lastSeq, "the lease bucket's last sequence after the crash").toBeGreaterThanOrEqual(kvBefore.lastSeq);
      const gone: string[] = [];
      for (const key of kvBefore.live.keys()) if (!["PUT", "DEL", "PURGE"].includes(await leaseRecord(key))) gone.push(key);
      expect(gone, "lease records lost in the crash").toEqual([]);
      expect(holds(kvRestarted, held), "the held lease's record after the crash").toBe(true);

      // Back: status ok, nothing missing, every breaker closed; then a turn under a lease, not degraded.
      await expect
        .poll(
          async () => {
            const s = await getJson("/v1/atlas/status");
            const open = ((s.api?.breakers ?? []) as { name: string; state: string }[]).filter((b) => b.state !== "closed");
            return `${s.status} nats=${s.nats?.connected} missing=${JSON.stringify(s.missing)} open=${JSON.stringify(open.map((b) => b.name))}`;
          },
          { timeout: 30_000, interval: 250 },
        )
        .toBe("ok nats=true missing=[] open=[]");
      await expect
        .poll(
          async () => {
            const r = await call("probe", "POST", "/v1/chat/completions", chatBody("probe", {}));
            results.push(r);
            const slots = (r.json as { atlas?: { slots?: { fencing_token: number | null }[] } }).atlas?.slots ?? [];
            return `${r.status} degraded=${r.degraded} leased=${slots.length > 0 && slots.every((s) => s.fencing_token !== null)}`;
          },
          { timeout: 30_000, interval: 250 },
        )
        .toBe("200 degraded=null leased=true");
      // And session memory takes a whole-document write again (JetStream's streams recover on
      // their own schedule after a crash; until then a write is a clean, retryable 503).
      await expect
        .poll(
          async () => {
            const r = await call("probe", "PUT", `/v1/atlas/memory/probe-${crypto.randomUUID().slice(0, 8)}`, {
              version: 1,
              layers: [{ messages: [{ role: "user", content: "x" }] }],
            });
            results.push(r);
            return r.status;
          },
          { timeout: 30_000, interval: 250 },
        )
        .toBe(201);
      metricsBack = await metricCounts(); // read before "after" begins: every later request adds to it
      phase = "after";

      // Every service saw its connection go and come back, and it works.
      expect(seen.filter((s) => s.disconnect === 0 || s.reconnect === 0)).toEqual([]);
      for (const { bus } of buses) await bus.rtt();

      // Requests flow again: every lane gets through several times after the cluster is back.
      await expect
        .poll(() => ({ turns: sinceBack(turns), direct: sinceBack(direct), acked: acked("after") }), { timeout: 30_000, interval: 100 })
        .toSatisfy((n: { turns: number; acked: number; direct: number }) => n.turns >= 6 && n.direct >= 3 && n.acked >= 3);
    } finally {
      stop = true;
      await load;
    }

    // The bound: no broken connection and no 500 anywhere; only requests overlapping the outage
    // may fail, and only with a 503/504 and an OpenAI error body.
    const ok = (r: Result) => r.status >= 200 && r.status < 300;
    const overlaps = (r: Result) => r.started !== "after" && r.ended !== "before";
    const clean = (r: Result) =>
      [503, 504].includes(r.status) &&
      typeof (r.json as ErrorBody).error?.message === "string" &&
      typeof (r.json as ErrorBody).error?.type === "string";
    const failed = results.filter((r) => !ok(r));
    const summary = (f: (r: Result) => boolean) =>
      failed.filter(f).map((r) => `${r.kind} ${r.started}→${r.ended} ${r.status} ${JSON.stringify(r.json).slice(0, 200)}`);
    const bound = { broken: summary((r) => r.status === 0), outside: summary((r) => !overlaps(r)), unclean: summary((r) => !clean(r)) };
    expect(bound, "broken connections / failures outside the outage / not a clean 503 or 504").toEqual({
      broken: [],
      outside: [],
      unclean: [],
    });

    // Every 200 turn's append got acknowledged (it is durable); none was given up.
    await expect.poll(() => turns.filter((t) => !appendAudit.has(t.layer)).length, { timeout: 30_000 }).toBe(0);
    expect(turns.filter((t) => appendAudit.get(t.layer)?.outcome !== "ok")).toEqual([]);
    // Every acknowledged append is in its session: chat turns, direct appends, and what persistence
    // had applied before the kill (a lost consumer ack only redelivers: it applies idempotently).
    const want = new Map<string, Set<string>>(appliedBefore);
    for (const a of [...turns, ...direct]) want.set(a.session, new Set([...(want.get(a.session) ?? []), a.layer]));
    const missing = async () => {
      const out: string[] = [];
      for (const [session, ids] of want) {
        const have = await layerIds(session);
        for (const id of ids) if (!have.has(id)) out.push(`${session}/${id}`);
      }
      return out;
    };
    await expect.poll(missing, { timeout: 30_000, interval: 250 }).toEqual([]);
    for (const id of imported) expect((await call("read", "GET", `/v1/atlas/memory/${id}`)).status).toBe(200);

    // The scheduler still knows the held lease (in memory, or restored from KV by a new term).
    const renew = { lease_id: held.lease_id, fencing_token: held.fencing_token, ttl_ms: 600_000 };
    const renewHeld = () =>
      mine.call(LeaseRenew, renew).then(
        () => "renewed",
        (err: BusError) => (err.code === "conflict" ? `refused: ${err.message}` : "no leader answers yet"), // a loaded machine may re-elect
      );
    await expect.poll(renewHeld, { timeout: 20_000, interval: 250 }).toBe("renewed");

    // Metrics events arrive again: every request and generation since the cluster is back.
    const chatsAfter = results.filter((r) => r.kind === "chat" && r.started === "after").length;
    const metricsSince = async () => {
      const m = await metricCounts();
      return { chat: m.chat - metricsBack.chat, generations: m.generations - metricsBack.generations };
    };
    await expect
      .poll(metricsSince, { timeout: 10_000 })
      .toSatisfy((n: { chat: number; generations: number }) => n.chat >= chatsAfter && n.generations >= chatsAfter);

    const statusAfter = await getJson("/v1/atlas/status");
    const kvAfter = await leaseRecords();
    const count = (list: Result[], key: (r: Result) => string) => {
      const m: Record<string, number> = {};
      for (const r of list) m[key(r)] = (m[key(r)] ?? 0) + 1;
      return JSON.stringify(m);
    };
    const appends = (s: typeof statusAfter) => JSON.stringify(s.services?.persistence?.[0]?.details?.appends);
    console.log(
      [
        "faults_nats (SIGKILL):",
        `  requests ${results.length} by phase ${count(results, (r) => r.started)}; failed ${failed.length}, all overlapping the outage: by phase ${count(failed, (r) => r.started)}, by status ${count(failed, (r) => String(r.status))}`,
        `  chat turns 200: ${turns.length} (${sinceBack(turns)} after the restart); their appends acknowledged before the kill ${acked("before")}, during the outage ${acked("outage")}, after ${acked("after")}`,
        `  direct appends 202: ${direct.length} (${sinceBack(direct)} after, 40 in the burst before the kill); imports 201: ${imported.length}; layers applied before the kill: ${[...appliedBefore.values()].reduce((s, v) => s + v.size, 0)}; appends in the stream at restart (stored, not yet acked): ${backlogAtRestart}`,
        `  persistence appends before ${appends(statusBefore)}, after ${appends(statusAfter)}`,
        `  lease records: before the kill ${kvBefore.live.size} live (last seq ${kvBefore.lastSeq}); at restart ${kvRestarted.live.size} live (last seq ${kvRestarted.lastSeq}); at the end ${kvAfter.live.size} live (last seq ${kvAfter.lastSeq})`,
        `  scheduler term before ${statusBefore.scheduler?.term}, after ${statusAfter.scheduler?.term}; reconnects ${JSON.stringify(seen.map((s) => `${s.key}:${s.reconnect}`))}`,
      ].join("\n"),
    );
    await mine.call(LeaseRelease, { lease_id: held.lease_id, fencing_token: held.fencing_token, tokens_in_slot: 0 });
  }, 240_000); // reached only when a step hangs (each wait has its own timeout); a run takes 10–30 s
});
