/**
 * Metrics end to end on a real cluster (nats-server, worker on the tiny model, api, metrics):
 * request events become windows, the JSON and Prometheus endpoints, the SSE stream with
 * Last-Event-ID resume (on any api instance: the metrics service owns the history) and reset,
 * and a clear 503 while the metrics service is down.
 */
import { Bus } from "@atlas/bus";
import { loadConfig } from "@atlas/config";
import {
  ATLAS_VERSION,
  LATENCY_BUCKETS_S,
  MetricsQuery,
  type MetricsSnapshot,
  MetricsSnapshotEvent,
  type WindowStats,
} from "@atlas/contracts";
import { createLogger } from "@atlas/log";
import { metricsService, startMetrics } from "@atlas/metrics";
import { launchService, type RunningService, type ServiceContext } from "@atlas/service";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSse, type SseClient } from "./helpers/sse.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const INTERVAL_MS = 100;
let stack: Stack;
/** The tests' own connection (the unrestricted test user). */
let client: Bus;

beforeAll(async () => {
  stack = await startStack({ services: ["metrics", "worker", "api"], env: { ATLAS_METRICS_INTERVAL: String(INTERVAL_MS) } });
  client = await Bus.connect({
    servers: stack.nats.url,
    prefix: stack.config.ATLAS_NATS_PREFIX,
    service: { name: "test", version: ATLAS_VERSION },
    discoverable: false,
  });
});
afterAll(async () => {
  await client?.close();
  await stack?.close();
});

function post(path: string, body: unknown): Promise<Response> {
  return fetch(`${stack.baseUrl}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

async function chat(stream = false): Promise<void> {
  const r = await post("/v1/chat/completions", {
    model: MODEL,
    messages: [{ role: "user", content: "Count to three." }],
    max_tokens: 8,
    stream,
  });
  expect(r.status).toBe(200);
  await r.text();
}

/** The body of `GET /v1/atlas/metrics` (or its error). */
type MetricsBody = Omit<MetricsSnapshot, "windows"> & {
  object: string;
  window: string;
  latency_budget_ms: number;
  stats: WindowStats;
  error?: { type: string; code: string | null; param: string | null };
};

async function metricsJson(window = "10s"): Promise<{ status: number; body: MetricsBody }> {
  const r = await fetch(`${stack.baseUrl}/v1/atlas/metrics?window=${window}`);
  return { status: r.status, body: (await r.json()) as MetricsBody };
}

/** Waits until the stream's next snapshot (skipping other events) and returns it. */
async function nextSnapshot(sse: SseClient): Promise<{ id: string; snapshot: MetricsSnapshot }> {
  for (;;) {
    const e = await sse.next();
    if (e.event === "snapshot") return { id: e.id ?? "", snapshot: JSON.parse(e.data) as MetricsSnapshot };
  }
}

describe("request metrics", () => {
  it("records requests, tokens, errors, latencies and workers, served as JSON per window", async () => {
    for (let i = 0; i < 4; i++) await chat(false);
    for (let i = 0; i < 3; i++) await chat(true);
    const missing = await post("/v1/chat/completions", { model: "nope", messages: [{ role: "user", content: "x" }] });
    expect(missing.status).toBe(404);
    await post("/v1/completions", { model: MODEL, prompt: "Once upon", max_tokens: 4 }).then((r) => r.text());

    // The api's and the worker's events come in batches of their own: wait for both.
    await expect
      .poll(
        async () => {
          const stats = (await metricsJson("10s")).body.stats;
          return [stats?.api.requests, stats?.workers["worker-1"]?.generations];
        },
        { timeout: 10_000 },
      )
      .toEqual([9, 8]);
    const { status, body } = await metricsJson("10s");
    expect(status).toBe(200);
    expect(body).toMatchObject({ object: "atlas.metrics", window: "10s", interval_ms: INTERVAL_MS, latency_budget_ms: 5 });
    const api = body.stats.api;
    expect(api.errors).toBe(1);
    expect(api.error_codes).toEqual({ model_not_found: 1 });
    expect(api.streamed).toBe(3);
    expect(api.endpoints).toEqual({ "chat.completions": 8, completions: 1 });
    expect(api.tokens.completion).toBeGreaterThan(0);
    expect(api.cache.miss + api.cache.l1).toBe(8);
    expect(api.latency_ms.total.count).toBe(8);
    expect(api.latency_ms.total.p99).toBeGreaterThan(0);
    expect(api.latency_ms.total.p50).toBeLessThanOrEqual(api.latency_ms.total.p99);
    expect(api.latency_ms.overhead.p50).toBeLessThanOrEqual(api.latency_ms.total.p50);
    expect(api.over_budget).toBeLessThanOrEqual(8);
    // The worker's own events: one generation per sequence, and its slots.
    expect(body.stats.workers["worker-1"]?.generations).toBe(8);
    expect(body.workers["worker-1"]).toMatchObject({ model: MODEL, slots: 2 });
    expect(body.totals.services.api?.starts).toBeGreaterThanOrEqual(1);
  });

  it("refuses an unknown window with an OpenAI-format 400", async () => {
    const { status, body } = await metricsJson("2h");
    expect(status).toBe(400);
    expect(body.error).toMatchObject({ type: "invalid_request_error", param: "window" });
  });
});

describe("GET /metrics", () => {
  it("is accepted by a Prometheus text parser, with conventional names, types and help", async () => {
    const r = await fetch(`${stack.baseUrl}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    const families = parsePrometheusTextFormat(text);
    const byName = new Map(families.map((f) => [f.name, f]));
    for (const f of families) {
      expect(f.name).toMatch(/^atlas_[a-z0-9_]+$/);
      expect(f.help.length).toBeGreaterThan(10);
      if (f.type === "COUNTER") expect(f.name).toMatch(/_total$/);
      if (f.type === "HISTOGRAM") expect(f.name).toMatch(/_seconds$/);
    }
    const requests = byName.get("atlas_requests_total");
    expect(requests?.type).toBe("COUNTER");
    const sum = (requests?.metrics ?? []).reduce((a, m) => a + Number(m.value), 0);
    expect(sum).toBeGreaterThanOrEqual(9);
    expect(requests?.metrics).toContainEqual({ labels: { endpoint: "chat.completions", status: "error" }, value: "1" });
    // Latencies are histograms over the fixed buckets, cumulative up to +Inf = the count.
    const duration = byName.get("atlas_request_duration_seconds");
    expect(duration?.type).toBe("HISTOGRAM");
    const m = duration?.metrics[0] as { buckets: Record<string, string>; count: string; sum: string };
    const bound = (le: string) => (le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le));
    const les = Object.keys(m.buckets).sort((a, b) => bound(a) - bound(b));
    expect(les).toEqual([...LATENCY_BUCKETS_S.map(String), "+Inf"]);
    const counts = les.map((le) => Number(m.buckets[le]));
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(counts.at(-1)).toBe(Number(m.count));
    expect(Number(m.count)).toBeGreaterThanOrEqual(8);
    expect(Number(m.sum) / Number(m.count)).toBeGreaterThan(0);
    expect(Number(m.sum) / Number(m.count)).toBeLessThan(60); // seconds, not ms
    expect(byName.get("atlas_worker_slots")?.metrics).toContainEqual({ labels: { worker: "worker-1", model: MODEL }, value: "2" });
    expect(byName.get("atlas_time_to_first_token_seconds")?.type).toBe("HISTOGRAM");
    // The api's own gauges follow, labelled with its instance.
    expect(byName.get("atlas_api_max_concurrent")?.metrics[0]?.labels?.api).toBeTruthy();
    expect(byName.get("atlas_requests_over_budget_total")?.type).toBe("COUNTER");
    expect(
      byName
        .get("atlas_cache_requests_total")
        ?.metrics.map((x) => x.labels?.outcome)
        .sort(),
    ).toEqual(["l1", "l2", "l3", "miss", "none"]);
  });
});

describe("GET /v1/atlas/metrics/stream", () => {
  it("sends snapshots with their sequence as event id; a reconnect with Last-Event-ID gets exactly the missed ones", async () => {
    const url = `${stack.baseUrl}/v1/atlas/metrics/stream`;
    const first = await openSse(url);
    expect(first.status).toBe(200);
    const a = await nextSnapshot(first);
    const b = await nextSnapshot(first);
    expect(Number(b.id)).toBe(Number(a.id) + 1);
    expect(b.snapshot.seq).toBe(Number(b.id));
    first.close();
    const lastSeen = Number(b.id);

    // Snapshots go on while the client is away.
    await expect.poll(async () => (await metricsJson()).body.seq, { timeout: 5000 }).toBeGreaterThanOrEqual(lastSeen + 5);
    const again = await openSse(url, { "last-event-id": String(lastSeen) });
    const ids: number[] = [];
    for (let i = 0; i < 6; i++) ids.push(Number((await nextSnapshot(again)).id));
    again.close();
    expect(ids).toEqual(Array.from({ length: 6 }, (_, i) => lastSeen + 1 + i));
  });

  it("resumes with Last-Event-ID on an api instance that never saw the missed snapshots: exactly those, then live", async () => {
    // A client follows the stream on the first api instance, then goes away.
    const first = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream`);
    const lastSeen = Number((await nextSnapshot(first)).id);
    first.close();
    // Snapshots go on; then a second api instance starts (another one behind a load balancer).
    await expect.poll(async () => (await metricsJson()).body.seq, { timeout: 5000 }).toBeGreaterThanOrEqual(lastSeen + 5);
    const publishedBefore = (await metricsJson()).body.seq;
    const second = await stack.start("api");
    const secondUrl = String((await second.handle.health()).details?.address ?? "");
    expect(secondUrl).not.toBe("");

    // It resumes there: the snapshots from lastSeen + 1 to publishedBefore went out before that
    // instance existed, so only the metrics service's history can have them.
    const resumed = await openSse(`${secondUrl}/v1/atlas/metrics/stream`, { "last-event-id": String(lastSeen) });
    expect(resumed.status).toBe(200);
    const count = publishedBefore - lastSeen + 5; // the replay, and some live ones after it
    const events: { event: string; id: number; instance: string }[] = [];
    while (events.length < count) {
      const e = await resumed.next();
      const s = JSON.parse(e.data) as MetricsSnapshot;
      events.push({ event: e.event, id: Number(e.id), instance: s.instance });
    }
    resumed.close();
    // No reset, no gap, no repeat across the replay and the live ones.
    expect(events.map((e) => e.event)).toEqual(Array(count).fill("snapshot"));
    expect(events.map((e) => e.id)).toEqual(Array.from({ length: count }, (_, i) => lastSeen + 1 + i));
    expect(new Set(events.map((e) => e.instance)).size).toBe(1);

    // The same after an api restart: the restarted instance has seen nothing of the series.
    const lastOnSecond = events.at(-1)?.id ?? 0;
    await stack.stop("api");
    // With no api up, ask the metrics service directly.
    await expect.poll(async () => (await client.call(MetricsQuery, {})).seq, { timeout: 5000 }).toBeGreaterThanOrEqual(lastOnSecond + 3);
    await stack.start("api");
    const restarted = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream`, { "last-event-id": String(lastOnSecond) });
    const ids: number[] = [];
    for (let i = 0; i < 6; i++) {
      const e = await restarted.next();
      expect(e.event).toBe("snapshot");
      ids.push(Number(e.id));
    }
    restarted.close();
    expect(ids).toEqual(Array.from({ length: 6 }, (_, i) => lastOnSecond + 1 + i));
  });

  it("starts a new stream with ?history=N: the newest N the metrics service kept when it connected, then the live ones", async () => {
    const url = `${stack.baseUrl}/v1/atlas/metrics/stream`;
    const before = (await metricsJson()).body.seq;
    const sse = await openSse(`${url}?history=5`);
    expect(sse.status).toBe(200);
    // The stream chose its start before its headers came, so between these two.
    const after = (await metricsJson()).body.seq;
    const ids: number[] = [];
    for (let i = 0; i < 10; i++) ids.push(Number((await nextSnapshot(sse)).id));
    sse.close();
    const start = ids[0] ?? 0;
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => start + i));
    expect(start + 4).toBeGreaterThanOrEqual(before);
    expect(start + 4).toBeLessThanOrEqual(after);
  });

  it("says reset when the snapshots asked for are gone (a restarted metrics service), never a silent gap", async () => {
    const url = `${stack.baseUrl}/v1/atlas/metrics/stream`;
    const live = await openSse(url);
    const before = await nextSnapshot(live);

    await stack.stop("metrics");
    await stack.start("metrics");

    // The live client is told the series broke, then follows the new one from its start.
    let e = await live.next(10_000);
    while (e.event === "snapshot") e = await live.next(10_000);
    expect(e.event).toBe("reset");
    expect(JSON.parse(e.data)).toMatchObject({ reason: "discontinuity" });
    const after = await nextSnapshot(live);
    expect(after.snapshot.instance).not.toBe(before.snapshot.instance);
    live.close();

    // A client resuming from an id of the old series gets a reset, then fresh snapshots.
    await expect.poll(async () => (await metricsJson()).body.seq, { timeout: 5000 }).toBeGreaterThan(0);
    const stale = await openSse(url, { "last-event-id": String(Number(before.id) + 100_000) });
    const r = await stale.next();
    expect(r.event).toBe("reset");
    expect(JSON.parse(r.data)).toMatchObject({ reason: "gone", last_event_id: String(Number(before.id) + 100_000) });
    const s = await nextSnapshot(stale);
    expect(s.snapshot.instance).toBe(after.snapshot.instance);
    stale.close();
  });
});

describe("with the metrics service down", () => {
  it("ends an open stream with event: error when it needs the history and the metrics service does not answer", async () => {
    const live = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream`);
    const { snapshot } = await nextSnapshot(live);
    await stack.stop("metrics");
    // A snapshot of a series the stream cannot place: only the metrics service could say what it is.
    client.publish(MetricsSnapshotEvent, { ...snapshot, instance: "elsewhere", seq: 1 });
    let e = await live.next();
    while (e.event === "snapshot") e = await live.next();
    expect(e.event).toBe("error");
    expect(JSON.parse(e.data)).toMatchObject({ error: { type: "server_error", code: "metrics_unavailable" } });
    // The stream ends, so the client reconnects with its Last-Event-ID (and gets a 503 meanwhile).
    await expect(live.next()).rejects.toThrow(/ended/);
    const again = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream`, { "last-event-id": String(snapshot.seq) });
    again.close();
    expect(again.status).toBe(503);
  });

  it("answers 503 in OpenAI's format on every metrics endpoint, and chat keeps working", async () => {
    await stack.stop("metrics"); // (stopped already by the test above)
    const json = await metricsJson();
    expect(json.status).toBe(503);
    expect(json.body.error).toMatchObject({ type: "server_error", code: "metrics_unavailable" });
    const prom = await fetch(`${stack.baseUrl}/metrics`);
    expect(prom.status).toBe(503);
    expect(prom.headers.get("retry-after")).toBe("2");
    expect(((await prom.json()) as { error: { code: string } }).error.code).toBe("metrics_unavailable");
    // The stream refuses too, instead of hanging silently: where a client starts comes from the metrics service.
    const stream = await fetch(`${stack.baseUrl}/v1/atlas/metrics/stream`, { headers: { accept: "text/event-stream" } });
    expect(stream.status).toBe(503);
    expect(((await stream.json()) as { error: { code: string } }).error.code).toBe("metrics_unavailable");
    await chat(false);
    await chat(true);
    // The dashboard page itself is static and still served (it shows the stream's state).
    expect((await fetch(`${stack.baseUrl}/dashboard`)).status).toBe(200);
    await stack.start("metrics");
  });
});

describe("a history longer than one reply", () => {
  // A metrics service whose history replies hold one snapshot each (`more` on every page), and an
  // api that has never seen its snapshots: every replay is paged from the metrics service.
  let small: Stack;
  let metrics: RunningService;

  beforeAll(async () => {
    small = await startStack({ services: ["api"], env: { ATLAS_METRICS_INTERVAL: String(INTERVAL_MS) } });
    const onePerReply = { ...metricsService, start: (ctx: ServiceContext) => startMetrics(ctx, { historyMaxBytes: 1 }) };
    metrics = await launchService(onePerReply, {
      config: loadConfig(small.envFor("metrics")),
      log: createLogger({ service: "test", level: "silent", format: "json" }),
    });
  });
  afterAll(async () => {
    await metrics?.stop();
    await small?.close();
  });

  it("pages the replay from the metrics service, then hands over to the live snapshots without a gap or a repeat", async () => {
    const url = `${small.baseUrl}/v1/atlas/metrics/stream`;
    // Let it publish a few dozen first (asked of the api, which relays the query).
    const seq = async () => ((await (await fetch(`${small.baseUrl}/v1/atlas/metrics?window=10s`)).json()) as { seq: number }).seq;
    await expect.poll(seq, { timeout: 10_000 }).toBeGreaterThanOrEqual(30);

    const fresh = await openSse(`${url}?history=25`);
    const ids: number[] = [];
    while (ids.length < 35) ids.push(Number((await nextSnapshot(fresh)).id));
    fresh.close();
    expect(ids).toEqual(Array.from({ length: 35 }, (_, i) => (ids[0] ?? 0) + i));

    // A resume from early on: some 40 pages of replay, then the live ones.
    const from = 2;
    const resumed = await openSse(url, { "last-event-id": String(from) });
    const again: string[] = [];
    while (again.length < 50) {
      const e = await resumed.next();
      again.push(e.event === "snapshot" ? (e.id ?? "") : e.event);
    }
    resumed.close();
    expect(again).toEqual(Array.from({ length: 50 }, (_, i) => String(from + 1 + i)));
  });
});
