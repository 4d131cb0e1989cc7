/**
 * The metrics service: subscribes to every service's metric events
 * (`<prefix>.metrics.events.*`), folds them into sliding windows ({@link MetricsAggregator}),
 * publishes a snapshot every `ATLAS_METRICS_INTERVAL` ms on `<prefix>.metrics.snapshot` with a
 * sequence id that grows by one each time, and answers `<prefix>.metrics.query` (the view as
 * JSON), `<prefix>.metrics.prometheus` (the same in the Prometheus text format, `prometheus.ts`)
 * and `<prefix>.metrics.history` (the snapshots it published, from its ring, `history.ts`).
 * Contracts: `libs/contracts/src/metrics.ts`.
 *
 * Run one instance per cluster: snapshots carry this instance's own sequence, and it owns their
 * history (the api relays it to SSE clients).
 *
 * @module
 */
import {
  ALL_SERVICES,
  MetricEvents,
  MetricsHistory,
  MetricsPrometheus,
  MetricsQuery,
  MetricsSnapshotEvent,
  ServiceName,
} from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { MetricsAggregator } from "./aggregator.ts";
import { SnapshotHistory } from "./history.ts";
import { renderPrometheus } from "./prometheus.ts";
import type { Clock } from "./windows.ts";

/** Options for tests and embedding. */
export interface MetricsOptions {
  /** The clock (epoch ms); default `Date.now`. */
  now?: Clock;
  /** Snapshots kept for `MetricsHistory`; default `METRICS_HISTORY_CAPACITY`. */
  historyCapacity?: number;
  /** Most bytes of snapshots in one `MetricsHistory` reply; default `METRICS_HISTORY_MAX_BYTES`. */
  historyMaxBytes?: number;
}

/** Starts the metrics service and returns its handle. */
export async function startMetrics(ctx: ServiceContext, options: MetricsOptions = {}): Promise<ServiceHandle> {
  const { bus, config, log } = ctx;
  const intervalMs = config.ATLAS_METRICS_INTERVAL;
  const aggregator = new MetricsAggregator({
    instance: bus.instance,
    intervalMs,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const history = new SnapshotHistory({ capacity: options.historyCapacity, maxBytes: options.historyMaxBytes });
  let seq = 0;

  bus.subscribe(
    MetricEvents,
    (batch) => {
      for (const event of batch) aggregator.record(event);
    },
    { params: { service: ALL_SERVICES } },
  );
  bus.serve(MetricsQuery, (req) => aggregator.snapshot(seq, req.window === undefined ? undefined : [req.window]), {});
  bus.serve(
    MetricsPrometheus,
    () => ({
      text: renderPrometheus(aggregator.snapshot(seq), {
        budgetMs: config.ATLAS_LATENCY_BUDGET_MS,
        byModel: aggregator.modelTotals(),
        workerModels: aggregator.workerModels(),
      }),
    }),
    {},
  );
  bus.serve(MetricsHistory, (req) => ({ instance: bus.instance, ...history.get(req) }), {});

  const publish = () => {
    try {
      const snapshot = aggregator.snapshot(seq + 1);
      // Kept before it goes out: whoever sees it live and then asks for the history finds it.
      history.push(snapshot);
      seq = snapshot.seq;
      bus.publish(MetricsSnapshotEvent, snapshot);
    } catch (err) {
      log.error({ err, seq }, "Cannot publish a metrics snapshot");
    }
  };
  const timer = setInterval(publish, intervalMs);
  bus.publish(MetricEvents, [{ type: "service", service: ServiceName.metrics, instance: bus.instance, ts: Date.now(), event: "started" }], {
    service: ServiceName.metrics,
  });
  log.info({ intervalMs }, `Publishing metric snapshots every ${intervalMs} ms`);

  return {
    health: () => ({
      state: bus.connected ? "ok" : "down",
      checks: { nats: { ok: bus.connected } },
      details: { snapshot_seq: seq, interval_ms: intervalMs, history: { oldest: history.oldest, latest: history.latest } },
    }),
    stop: async () => clearInterval(timer),
  };
}

/** The metrics service, for `runService` and in-process tests. */
export const metricsService: ServiceDefinition = {
  name: ServiceName.metrics,
  description: "Sliding-window analytics over every service's metric events",
  start: (ctx) => startMetrics(ctx),
};
