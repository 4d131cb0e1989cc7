/**
 * `@atlas/metrics`: the metrics service, for tests and embedding.
 *
 * @module
 */
export { metricsService, startMetrics } from "./service.ts";
