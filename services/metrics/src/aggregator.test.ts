import { type GenerationEvent, LATENCY_BUCKETS_S, MetricsSnapshot, type RequestEvent, type WorkerStatsEvent } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { MAX_MODEL_LABELS, MetricsAggregator } from "./aggregator.ts";
import { renderPrometheus } from "./prometheus.ts";

function clock(start = 1_700_000_000_000) {
  let t = start;
  return {
    now: () => t,
    tick: (ms: number) => {
      t += ms;
    },
  };
}

function request(over: Partial<RequestEvent> = {}): RequestEvent {
  return {
    type: "request",
    service: "api",
    instance: "api-1",
    ts: 0,
    request_id: "req_1",
    endpoint: "chat.completions",
    model: "m",
    stream: false,
    status: "ok",
    http_status: 200,
    error_code: null,
    workers: ["w1"],
    sequences: 1,
    tokens: { prompt: 10, completion: 5, cached: 0 },
    cache: "miss",
    latency_ms: { queue: 1, lease: 0.5, memory: 0, ttft: 2, generation: 7, engine: 10, total: 11, overhead: 1 },
    over_budget: false,
    ...over,
  };
}

function generation(over: Partial<GenerationEvent> = {}): GenerationEvent {
  return {
    type: "generation",
    service: "inference-worker",
    instance: "w1",
    ts: 0,
    worker_id: "w1",
    model: "m",
    request_id: "req_1/0",
    status: "ok",
    error_code: null,
    finish_reason: "stop",
    tokens: { prompt: 10, completion: 5, cached: 0 },
    latency_ms: { queue: 1, ttft: 2, generation: 7 },
    slots: 2,
    free_slots: 1,
    queued: 0,
    ...over,
  };
}

function stats(over: Partial<WorkerStatsEvent> = {}): WorkerStatsEvent {
  return {
    type: "worker_stats",
    service: "inference-worker",
    instance: "w1",
    ts: 0,
    worker_id: "w1",
    model: "m",
    slots: 2,
    free_slots: 2,
    queued: 0,
    ...over,
  };
}

describe("MetricsAggregator", () => {
  it("turns request events into rates, percentiles, cache ratios and totals", () => {
    const c = clock();
    const agg = new MetricsAggregator({ instance: "m-1", intervalMs: 1000, now: c.now });
    c.tick(10_000); // a full 10 s window has passed since start
    for (let i = 1; i <= 100; i++) agg.record(request({ latency_ms: { ...request().latency_ms, total: i, overhead: i / 10 } }));
    agg.record(request({ cache: "l1", tokens: { prompt: 10, completion: 5, cached: 8 } }));
    agg.record(request({ status: "error", http_status: 504, error_code: "timeout" }));
    agg.record(request({ status: "cancelled", stream: true, over_budget: false }));
    agg.record(request({ over_budget: true }));

    const s = MetricsSnapshot.parse(agg.snapshot(7));
    expect(s.seq).toBe(7);
    const w = s.windows["10s"];
    expect(w?.api.requests).toBe(104);
    expect(w?.api.errors).toBe(1);
    expect(w?.api.error_codes).toEqual({ timeout: 1 });
    expect(w?.api.cancelled).toBe(1);
    expect(w?.api.streamed).toBe(1);
    expect(w?.api.over_budget).toBe(1);
    expect(w?.api.rate).toBeCloseTo(104 / w!.span_s, 6);
    expect(w?.api.endpoints).toEqual({ "chat.completions": 104 });
    // Latencies come from the 102 successful requests only (100 + l1 + over budget).
    expect(w?.api.latency_ms.total.count).toBe(102);
    expect(Math.abs((w?.api.latency_ms.total.max ?? 0) - 100)).toBeLessThan(0.1); // HdrHistogram: within 0.1%
    expect(w?.api.latency_ms.lease.p99).toBe(0.5);
    expect(w?.api.cache.l1).toBe(1);
    expect(w?.api.cache.miss).toBe(103);
    expect(w?.api.cache.hit_ratio).toBeCloseTo(1 / 104, 6);
    expect(s.totals.requests).toEqual({ "chat.completions|ok": 102, "chat.completions|error": 1, "chat.completions|cancelled": 1 });
    expect(s.totals.latency_s.total?.count).toBe(102);
    // The lifetime histogram (Prometheus `le` buckets, cumulative): totals of 1…100 ms and two of 11 ms.
    const le = (bound: number) =>
      s.totals.latency_s.total?.buckets?.[LATENCY_BUCKETS_S.indexOf(bound as (typeof LATENCY_BUCKETS_S)[number])];
    expect([0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 120].map(le)).toEqual([0, 1, 5, 10, 27, 52, 102, 102]);
    expect(s.totals.tokens.cached).toBe(8);
    expect(s.totals.services.api?.events).toBe(104);
    expect(s.totals.services.api?.errors).toBe(1);
  });

  it("keeps per-worker windows, slot use and queue depth, and forgets a silent worker's gauges", () => {
    const c = clock();
    const agg = new MetricsAggregator({ instance: "m-1", intervalMs: 1000, now: c.now, workerTtlMs: 5000 });
    agg.record(stats({ free_slots: 2 }));
    agg.record(stats({ free_slots: 0, queued: 3 }));
    agg.record(generation());
    agg.record(generation({ worker_id: "w2", instance: "w2", status: "error", error_code: "internal" }));
    let s = agg.snapshot(1);
    const w = s.windows["1m"];
    expect(w?.workers.w1?.generations).toBe(1);
    expect(w?.workers.w1?.slot_use).toBe(0.5); // (0 + 1) / 2 samples
    expect(w?.workers.w1?.queue_depth).toEqual({ mean: 1.5, max: 3 });
    expect(w?.workers.w2?.errors).toBe(1);
    expect(w?.worker.generations).toBe(2);
    expect(s.workers.w1).toMatchObject({ slots: 2, busy: 1, queued: 0 }); // the last event was the generation
    expect(s.totals.workers.w2?.errors).toBe(1);

    c.tick(6000);
    agg.record(stats({ worker_id: "w2", instance: "w2" }));
    s = agg.snapshot(2);
    expect(Object.keys(s.workers)).toEqual(["w2"]);
    expect(s.windows["1m"]?.workers.w1?.generations).toBe(1); // its window data stays until it expires

    c.tick(5 * 60_000);
    s = agg.snapshot(3, ["10s"]);
    expect(Object.keys(s.windows)).toEqual(["10s"]);
    expect(s.windows["10s"]?.workers).toEqual({}); // both silent and empty: forgotten
  });

  it("counts service starts and errors", () => {
    const agg = new MetricsAggregator({ instance: "m-1", intervalMs: 1000 });
    agg.record({ type: "service", service: "api", instance: "a", ts: 0, event: "started" });
    agg.record({ type: "service", service: "api", instance: "a", ts: 0, event: "started" });
    agg.record({ type: "service", service: "inference-worker", instance: "w", ts: 0, event: "error", detail: "bad model" });
    const s = agg.snapshot(1);
    expect(s.windows["5m"]?.services).toEqual({
      api: { events: 2, errors: 0, starts: 2 },
      "inference-worker": { events: 1, errors: 1, starts: 0 },
    });
  });
});

describe("the model label", () => {
  it("keeps request totals per served model; names no served model counts under none, so the label stays bounded", () => {
    const agg = new MetricsAggregator({ instance: "m-1", intervalMs: 1000 });
    agg.record(stats({ worker_id: "w1", model: "alpha" }));
    agg.record(generation({ worker_id: "w2", instance: "w2", model: "beta" }));
    agg.record(request({ model: "alpha", workers: ["w1"] }));
    agg.record(request({ model: "alpha", workers: ["w1"], over_budget: true }));
    agg.record(request({ model: "beta", workers: ["w2"], endpoint: "completions" }));
    // Unknown names (a client's 404s) never become a label value.
    for (let i = 0; i < 3; i++) {
      agg.record(request({ model: `nope-${i}`, workers: [], status: "error", http_status: 404, error_code: "model_not_found" }));
    }
    // A request that ran on a worker names a served model even before that worker's own events arrive.
    agg.record(request({ model: "gamma", workers: ["w3"] }));
    expect([...agg.modelTotals().keys()]).toEqual(["alpha", "beta", "", "gamma"]);
    expect(agg.modelTotals().get("alpha")).toMatchObject({ requests: { "chat.completions|ok": 2 }, over_budget: 1 });
    expect(agg.modelTotals().get("")?.errors).toEqual({ model_not_found: 3 });
    expect(agg.snapshot(1).totals.requests).toEqual({ "chat.completions|ok": 3, "completions|ok": 1, "chat.completions|error": 3 });

    const text = renderPrometheus(agg.snapshot(1), { budgetMs: 5, byModel: agg.modelTotals(), workerModels: agg.workerModels() });
    expect(text).toContain('atlas_requests_total{endpoint="chat.completions",status="ok",model="alpha"} 2');
    expect(text).toContain('atlas_requests_total{endpoint="completions",status="ok",model="beta"} 1');
    expect(text).toContain('atlas_requests_total{endpoint="chat.completions",status="error"} 3');
    expect(text).toContain('atlas_request_errors_total{code="model_not_found"} 3');
    expect(text).toContain('atlas_requests_over_budget_total{model="alpha"} 1');
    expect(text).toContain('atlas_completion_tokens_total{model="gamma"} 5');
    expect(text).toContain('atlas_model_request_duration_seconds_count{model="alpha"} 2');
    expect(text).toContain('atlas_model_time_to_first_token_seconds_bucket{model="beta",le="+Inf"} 1');
    expect(text).not.toMatch(/model="nope/);
    // The cluster-wide histograms stay unlabelled, with every successful request.
    expect(text).toContain("atlas_request_duration_seconds_count 4");
    expect(text).toContain('atlas_worker_generations_total{worker="w2",model="beta"} 1');
    expect(text).toContain('atlas_worker_slots_busy{worker="w1",model="alpha"} 0');
  });

  it("labels at most MAX_MODEL_LABELS models", () => {
    const agg = new MetricsAggregator({ instance: "m-1", intervalMs: 1000 });
    for (let i = 0; i <= MAX_MODEL_LABELS; i++) agg.record(request({ model: `m${i}`, workers: ["w1"] }));
    expect(agg.modelTotals().size).toBe(MAX_MODEL_LABELS + 1); // the last one counts under none
    expect(agg.modelTotals().get("")?.requests).toEqual({ "chat.completions|ok": 1 });
  });
});
