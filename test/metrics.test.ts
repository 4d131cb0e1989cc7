/**
 * Metrics end to end on a real cluster (nats-server, worker on the tiny model, api, metrics):
 * request events become windows, the JSON and Prometheus endpoints, the SSE stream with
 * Last-Event-ID resume and reset, and a clear 503 while the metrics service is down.
 */
import { LATENCY_BUCKETS_S, type MetricsSnapshot, MetricsSnapshotEvent, type WindowStats } from "@atlas/contracts";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSse, type SseClient } from "./helpers/sse.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const INTERVAL_MS = 100;
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ services: ["metrics", "worker", "api"], env: { ATLAS_METRICS_INTERVAL: String(INTERVAL_MS) } });
});
afterAll(async () => stack?.close());

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

  it("starts a new stream with ?history=N: the last N snapshots received before it connected, then the live ones", async () => {
    const url = `${stack.baseUrl}/v1/atlas/metrics/stream`;
    const metricsBus = stack.running.get("metrics")?.[0]?.bus;
    if (metricsBus === undefined) throw new Error("metrics is not running");
    const live = await openSse(url);
    const { snapshot: real } = await nextSnapshot(live);
    // The metrics service publishes every 100 ms on its own, so which of its snapshots came before
    // a connection would be a race. This test publishes its own instead, in the service's name
    // and far ahead in its series: the api's feed starts a new epoch with them and drops the
    // service's own as already seen, so nothing arrives but what is published here.
    const base = real.seq + 1_000_000;
    const published = (i: number): MetricsSnapshot => ({ ...real, seq: base + i, ts: real.ts + i });
    for (let i = 1; i <= 8; i++) metricsBus.publish(MetricsSnapshotEvent, published(i));
    // The live client shows when the api has all eight.
    const seen: number[] = [];
    while (seen.at(-1) !== base + 8) {
      const s = await nextSnapshot(live);
      if (Number(s.id) > base) seen.push(Number(s.id));
    }
    expect(seen).toEqual(Array.from({ length: 8 }, (_, i) => base + 1 + i));

    const sse = await openSse(`${url}?history=5`);
    expect(sse.status).toBe(200);
    // The stream chose its start when it connected (before its headers came): one more now is live.
    metricsBus.publish(MetricsSnapshotEvent, published(9));
    const received: { id: string; snapshot: MetricsSnapshot }[] = [];
    while (received.at(-1)?.id !== String(base + 9)) received.push(await nextSnapshot(sse));
    // Exactly the last five published before the connection, as published, then the live one.
    expect(received.map((r) => Number(r.id))).toEqual([4, 5, 6, 7, 8, 9].map((i) => base + i));
    expect(received.map((r) => r.snapshot)).toEqual([4, 5, 6, 7, 8, 9].map(published));
    sse.close();

    // Back to the service's own series (a restart starts a new one) for the tests below.
    await stack.stop("metrics");
    await stack.start("metrics");
    for (;;) {
      const s = await nextSnapshot(live);
      if (s.snapshot.instance !== real.instance) break;
    }
    live.close();
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
  it("answers 503 in OpenAI's format on every metrics endpoint, and chat keeps working", async () => {
    await stack.stop("metrics");
    const json = await metricsJson();
    expect(json.status).toBe(503);
    expect(json.body.error).toMatchObject({ type: "server_error", code: "metrics_unavailable" });
    const prom = await fetch(`${stack.baseUrl}/metrics`);
    expect(prom.status).toBe(503);
    expect(prom.headers.get("retry-after")).toBe("2");
    expect(((await prom.json()) as { error: { code: string } }).error.code).toBe("metrics_unavailable");
    // Once snapshots are overdue the stream refuses too, instead of hanging silently.
    await expect
      .poll(
        async () => {
          const sse = await openSse(`${stack.baseUrl}/v1/atlas/metrics/stream`);
          sse.close();
          return sse.status;
        },
        { timeout: 10_000, interval: 500 },
      )
      .toBe(503);
    await chat(false);
    await chat(true);
    // The dashboard page itself is static and still served (it shows the stream's state).
    expect((await fetch(`${stack.baseUrl}/dashboard`)).status).toBe(200);
    await stack.start("metrics");
  });
});
