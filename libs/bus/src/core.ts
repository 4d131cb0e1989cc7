/**
 * `BusCore`: what the bus's own modules (the caller, the handlers, the relay, the forwarding
 * rpc, discovery) need of the connection they work on. The `Bus` class (`bus.ts`) implements it
 * and builds on them; they depend on this interface, not on `bus.ts`, so the imports in this
 * package point one way: `bus.ts` → modules → `core.ts`, `types.ts`.
 *
 * @module
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { StreamMux } from "./mux.ts";
import type { BusLogger } from "./types.ts";

/** A connected bus, as its modules see it. */
export interface BusCore {
  readonly nc: NatsConnection;
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
  /** The multiplexed inboxes of this connection's streams (one subscription each way). */
  streamMux(): StreamMux;
}
