/**
 * `@atlas/metrics`: the metrics service, for tests and embedding.
 *
 * @module
 */
export { type AggregatorOptions, MetricsAggregator } from "./aggregator.ts";
export { type HistoryAnswer, SnapshotHistory, type SnapshotHistoryOptions } from "./history.ts";
export { type MetricsOptions, metricsService, startMetrics } from "./service.ts";
export { type Clock, type Percentiles, SlidingWindows, type SlidingWindowsOptions } from "./windows.ts";
