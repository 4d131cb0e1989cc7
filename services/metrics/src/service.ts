/**
 * The metrics service: subscribes to every service's metric events
 * (`<prefix>.metrics.events.*`), folds them into sliding windows ({@link MetricsAggregator}),
 * publishes a snapshot every `ATLAS_METRICS_INTERVAL` ms on `<prefix>.metrics.snapshot` with a
 * sequence id that grows by one each time, and answers `<prefix>.metrics.query` (the view as
 * JSON) and `<prefix>.metrics.prometheus` (the same in the Prometheus text format, `prometheus.ts`).
 * Contracts: `libs/contracts/src/metrics.ts`.
 *
 * Run one instance per cluster: snapshots carry this instance's own sequence.
 *
 * @module
 */
import { ALL_SERVICES, MetricEvents, MetricsPrometheus, MetricsQuery, MetricsSnapshotEvent, ServiceName } from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { MetricsAggregator } from "./aggregator.ts";
import { renderPrometheus } from "./prometheus.ts";
import type { Clock } from "./windows.ts";

/** Options for tests and embedding. */
export interface MetricsOptions {
  /** The clock (epoch ms); default `Date.now`. */
  now?: Clock;
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
    () => ({ text: renderPrometheus(aggregator.snapshot(seq), { budgetMs: config.ATLAS_LATENCY_BUDGET_MS }) }),
    {},
  );

  const publish = () => {
    try {
      seq += 1;
      bus.publish(MetricsSnapshotEvent, aggregator.snapshot(seq));
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
      state: bus.nc.isClosed() ? "down" : "ok",
      checks: { nats: { ok: !bus.nc.isClosed() } },
      details: { snapshot_seq: seq, interval_ms: intervalMs },
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
