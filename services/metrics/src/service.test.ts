/**
 * The metrics service against a real nats-server: snapshots at the configured interval with
 * consecutive sequence ids, events from the bus reflected in snapshots and queries, and the
 * history of what it published (`MetricsHistory`).
 */
import { Bus, BusError, type NatsBus } from "@atlas/bus";
import { loadConfig } from "@atlas/config";
import {
  ATLAS_VERSION,
  MetricEvents,
  MetricsHistory,
  MetricsQuery,
  type MetricsSnapshot,
  MetricsSnapshotEvent,
  type RequestEvent,
  ServiceName,
} from "@atlas/contracts";
import { createLogger } from "@atlas/log";
import { launchService, type RunningService } from "@atlas/service";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { metricsService } from "./service.ts";

const INTERVAL_MS = 100;
const PREFIX = `t${crypto.randomUUID().slice(0, 8)}`;
let nats: NatsServer;
let metrics: RunningService;
let client: NatsBus;

beforeAll(async () => {
  nats = await startNatsServer();
  const config = loadConfig({ NATS_URL: nats.url, ATLAS_NATS_PREFIX: PREFIX, ATLAS_METRICS_INTERVAL: String(INTERVAL_MS) });
  metrics = await launchService(metricsService, { config, log: createLogger({ service: "test", level: "silent", format: "json" }) });
  client = await Bus.connect({ servers: nats.url, prefix: PREFIX, service: { name: "test", version: ATLAS_VERSION }, discoverable: false });
});
afterAll(async () => {
  await client?.close();
  await metrics?.stop();
  await nats?.stop();
});

function requestEvent(i: number): RequestEvent {
  return {
    type: "request",
    service: ServiceName.api,
    instance: "test",
    ts: Date.now(),
    request_id: `req_${i}`,
    endpoint: "chat.completions",
    model: "m",
    stream: false,
    status: "ok",
    http_status: 200,
    error_code: null,
    workers: ["w1"],
    sequences: 1,
    tokens: { prompt: 4, completion: 3, cached: 0 },
    cache: "miss",
    latency_ms: { queue: 0, lease: 0, memory: 0, ttft: 1, generation: 2, engine: 3, total: 3 + i / 100, overhead: i / 100 },
    over_budget: false,
  };
}

/** The snapshots published from now on, once there are at least `n`, as received. */
async function published(n: number): Promise<MetricsSnapshot[]> {
  const got: MetricsSnapshot[] = [];
  const sub = client.subscribe(MetricsSnapshotEvent, (s) => void got.push(s), {});
  await client.nc.flush();
  await expect.poll(() => got.length, { timeout: 10_000, interval: 20 }).toBeGreaterThanOrEqual(n);
  sub.unsubscribe();
  return got;
}

describe("metrics service", () => {
  it("publishes snapshots at the configured interval with consecutive sequence ids", async () => {
    const got = await published(12);
    const seqs = got.map((s) => s.seq);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBe((seqs[i - 1] ?? 0) + 1);
    expect(new Set(got.map((s) => s.instance)).size).toBe(1);
    expect(got[0]?.interval_ms).toBe(INTERVAL_MS);
    // Timers never fire early, so the snapshots' own timestamps are at least ~the interval apart
    // (a shorter interval fails here); a longer one would not bring 12 before the poll's timeout.
    const first = got[0] as MetricsSnapshot;
    const last = got[got.length - 1] as MetricsSnapshot;
    const mean = (last.ts - first.ts) / (last.seq - first.seq);
    expect(mean).toBeGreaterThan(INTERVAL_MS * 0.5);
    expect(Object.keys(first.windows).sort()).toEqual(["10s", "1m", "5m"]);
  });

  it("folds events from the bus into snapshots and answers queries for one window", async () => {
    for (let i = 1; i <= 50; i++) client.publish(MetricEvents, [requestEvent(i)], { service: ServiceName.api });
    await client.nc.flush();
    await expect
      .poll(async () => (await client.call(MetricsQuery, { window: "1m" })).windows["1m"]?.api.requests, { timeout: 5000 })
      .toBe(50);
    const q = await client.call(MetricsQuery, { window: "10s" });
    expect(Object.keys(q.windows)).toEqual(["10s"]);
    const total = q.windows["10s"]?.api.latency_ms.overhead;
    expect(total?.count).toBe(50);
    expect(total?.p50).toBeCloseTo(0.25, 3);
    expect(total?.p99).toBeCloseTo(0.5, 3);
    expect(q.totals.requests["chat.completions|ok"]).toBe(50);

    // A published snapshot shows them too, with the next sequence id.
    const seen = await new Promise<MetricsSnapshot>((resolve) => {
      const sub = client.subscribe(
        MetricsSnapshotEvent,
        (s) => {
          sub.unsubscribe();
          resolve(s);
        },
        {},
      );
    });
    expect(seen.windows["5m"]?.api.requests).toBe(50);
    expect(seen.seq).toBeGreaterThan(q.seq);
  });

  it("answers MetricsHistory from its ring: exactly the snapshots it published, in order", async () => {
    const got = await published(5);
    const first = got[0] as MetricsSnapshot;

    const h = await client.call(MetricsHistory, { after: first.seq - 1, limit: 300 });
    if (h.kind !== "ok") throw new Error(`expected snapshots, got ${JSON.stringify(h)}`);
    expect(h.instance).toBe(first.instance);
    // Every snapshot that went out live is there, as it went out, and the ring goes on contiguously.
    expect(h.snapshots.slice(0, got.length)).toEqual(got);
    expect(h.snapshots.map((s) => s.seq)).toEqual(Array.from({ length: h.snapshots.length }, (_, i) => first.seq + i));
    expect(h.snapshots.at(-1)?.seq).toBe(h.latest);
    expect(h.oldest).toBe(1);
    expect(h.more).toBe(false);

    // A new start gets the newest; an id ahead of the series, a reset with what is kept.
    const fresh = await client.call(MetricsHistory, { after: null, limit: 2 });
    expect(fresh.kind === "ok" && fresh.snapshots.length).toBe(2);
    const ahead = await client.call(MetricsHistory, { after: (h.latest ?? 0) + 1_000_000, limit: 1 });
    expect(ahead).toMatchObject({ kind: "reset", reason: "gone", instance: first.instance, oldest: 1 });
    // The request is checked against the contract.
    const bad = await client.call(MetricsHistory, { after: -1, limit: 1 }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(BusError);
    expect((bad as BusError).code).toBe("bad_request");
  });

  it("drops events that do not match the contract", async () => {
    client.nc.publish(`${PREFIX}.metrics.events.api`, new TextEncoder().encode(JSON.stringify({ type: "request", nope: 1 })));
    await client.nc.flush();
    const q = await client.call(MetricsQuery, {});
    expect(q.totals.requests["chat.completions|ok"]).toBe(50);
  });
});
