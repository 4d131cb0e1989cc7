/**
 * `@atlas/bus`: the actor runtime over NATS that every service uses.
 *
 * @module
 */

export { EventBatcher, type EventBatcherOptions } from "./batch.ts";
export { Bus, NatsBus } from "./bus.ts";
export { DEFAULT_IDLE_MS, type StreamCall } from "./caller.ts";
export { ClaimCheck, type ClaimCheckOptions, type ClaimKind, type Packed } from "./claim_check.ts";
export { Header } from "./codec.ts";
export type { ConnectionChange } from "./connection.ts";
export type { BusCore, BusIdentity, BusOptions, HealthStatus } from "./core.ts";
export { BusError, type BusErrorOptions, isNatsUnavailable, natsFailure, raceAbort } from "./errors.ts";
export { DEFAULT_FLUSH_MS, DEFAULT_MAX_BATCH_BYTES, DEFAULT_START_DELAY_MS } from "./frames.ts";
export {
  BusJetStream,
  type BusJetStreamOptions,
  type ConsumerSpec,
  isNotFound,
  isRevisionConflict,
  ReplicasError,
  type StreamSpec,
} from "./jetstream.ts";
export * from "./nats.ts";
export type { Forward } from "./rpc.ts";
export * from "./types.ts";
