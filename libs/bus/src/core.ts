/**
 * The bus's vocabulary, types only (the bottom of this package's imports): `BusOptions` and
 * `HealthStatus`, which `Bus` takes, and `BusCore`: what the bus's own modules (the caller, the
 * handlers, the relay, the forwarding rpc, discovery) need of the connection they work on. The
 * `NatsBus` class (`bus.ts`) implements it and the services' interface `Bus` (`bus_api.ts`). The
 * modules depend on this interface, not on `bus.ts`, so the imports in this package point one
 * way: `bus.ts` → modules → `core.ts`, `types.ts`.
 *
 * @module
 */

import type { HealthCheck, HealthState } from "@atlas/contracts";
import type { NatsConnection } from "@nats-io/transport-node";
import type { StreamMux } from "./mux.ts";
import type { BusLogger } from "./types.ts";

/** Who a bus speaks for: what the services' `Bus` (`bus_api.ts`) and the modules' `BusCore` share. */
export interface BusIdentity {
  /** The subject prefix of every subject (`atlas`). */
  readonly prefix: string;
  /** This process's service identity (discovery). */
  readonly service: { readonly name: string; readonly version: string; readonly description: string };
  /** This process's instance id. */
  readonly instance: string;
  readonly startedAt: Date;
  readonly log: BusLogger;
  /** Timeout of a call that names none, ms. */
  readonly defaultTimeoutMs: number;
  /** Discovery metadata (with the prefix). */
  readonly metadata: Record<string, string>;
}

/** A connected bus, as its modules see it. */
export interface BusCore extends BusIdentity {
  readonly nc: NatsConnection;
  /** The multiplexed inboxes of this connection's streams (one subscription each way). */
  streamMux(): StreamMux;
}

/** Options for `Bus.connect`. */
export interface BusOptions {
  /** NATS server URL(s). */
  servers: string | string[];
  /** Subject prefix of the cluster (`ATLAS_NATS_PREFIX`). */
  prefix: string;
  /** Who this instance is, for discovery and health. */
  service: { name: string; version: string; description?: string };
  /** Instance id; default a random UUID. */
  instance?: string;
  logger?: BusLogger;
  /** Default reply timeout of calls, in ms; default 5000. */
  defaultTimeoutMs?: number;
  /** NATS user and password, when the server requires them. */
  user?: string;
  pass?: string;
  /** Answer `$SRV` discovery; default true (a one-off tool such as a health check says false). */
  discoverable?: boolean;
  /** Extra discovery metadata (string values), e.g. a worker's model. */
  metadata?: Record<string, string>;
  /** Wait for a server at start instead of failing at once; default true. */
  waitOnFirstConnect?: boolean;
  /** Replicas of every JetStream stream, KV bucket and object store (`ATLAS_JS_REPLICAS`, 1–5); default 1. */
  replicas?: number;
  /** Try `servers` in their order (the first is preferred) instead of shuffling them; default false. */
  noRandomize?: boolean;
}

/** What a health check callback returns. */
export interface HealthStatus {
  state: HealthState;
  checks?: Record<string, HealthCheck>;
  details?: Record<string, unknown>;
}
