/**
 * `@atlas/testing`: helpers for tests that run against real parts.
 *
 * @module
 */
export * from "./nats_cluster.ts";
export * from "./nats_server.ts";
export * from "./ports.ts";
