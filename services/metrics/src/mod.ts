/**
 * `@atlas/metrics`: the metrics service, for tests and embedding.
 *
 * @module
 */
export { startMetrics } from "./service.ts";
