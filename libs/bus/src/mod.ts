/**
 * `@atlas/bus`: the actor runtime over NATS that every service uses.
 *
 * @module
 */
export { Bus, type BusOptions, type HealthStatus, natsFailure, raceAbort } from "./bus.ts";
export { Header } from "./codec.ts";
export { BusError, type BusErrorOptions, isNatsUnavailable } from "./errors.ts";
export { DEFAULT_IDLE_MS, type StreamCall } from "./stream.ts";
export * from "./types.ts";
