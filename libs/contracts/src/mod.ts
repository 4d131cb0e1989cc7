/**
 * `@atlas/contracts`: every subject and every message that crosses NATS, as values that both
 * ends import. Start here to find a message; its file names the sender and the handler.
 *
 * @module
 */
export * from "./atlas_http.ts";
export * from "./cache.ts";
export * from "./define.ts";
export * from "./discovery.ts";
export * from "./errors.ts";
export * from "./health.ts";
export * from "./jetstream.ts";
export * from "./limits.ts";
export * from "./memory.ts";
export * from "./memory_keys.ts";
export * from "./memory_rpc.ts";
export * from "./metrics.ts";
export * from "./metrics_views.ts";
export * from "./permissions.ts";
export * from "./scheduler.ts";
export * from "./service_permissions/mod.ts";
export * from "./subjects.ts";
export * from "./tools.ts";
export * from "./version.ts";
export * from "./worker.ts";
