/**
 * `Bus`: what a service may do with the bus, as an interface (types only, no runtime code). The
 * services and `libs/service` take this type; `NatsBus` (`bus.ts`) implements it over one NATS
 * connection. The connection itself is not part of it: a service cannot reach around the bus to
 * the NATS client, so every primitive it uses — contracts served and called, events, JetStream,
 * the claim check — goes through one owner.
 *
 * @module
 */
import type { EventContract, InfoResponse, RpcContract, StreamContract } from "@atlas/contracts";
import type { Msg, Subscription } from "@nats-io/transport-node";
import type { z } from "zod";
import type { StreamCall } from "./caller.ts";
import type { ConnectionChange } from "./connection.ts";
import type { BusIdentity, HealthStatus } from "./core.ts";
import type { BusJetStream } from "./jetstream.ts";
import type { Forward } from "./rpc.ts";
import type {
  CallOptions,
  HandlerContext,
  ParamsArg,
  RelayOptions,
  RelayTarget,
  ServeOptions,
  StreamCallOptions,
  StreamContext,
  StreamServeOptions,
} from "./types.ts";

/** One service instance's bus. */
export interface Bus extends BusIdentity {
  /** Replaces the extra discovery metadata (a worker sets its model once it is loaded). */
  setMetadata(metadata: Record<string, string>): void;
  /** True once `close` has begun. */
  readonly closing: boolean;
  /** Whether the connection is open (it may be reconnecting) and `close` has not begun. */
  readonly connected: boolean;
  /** The version of the NATS server this bus is connected to. */
  readonly serverVersion: string | undefined;
  /** This connection's JetStream: streams, consumers, KV buckets and object stores (`jetstream.ts`). */
  readonly jetstream: BusJetStream;
  /** Calls `listener` when the connection drops or comes back; returns the unsubscribe. */
  onConnectionChange(listener: (change: ConnectionChange) => void): () => void;
  /** Raw messages no contract wraps (a stream's records as JetStream publishes them); kept until the connection closes. */
  watch(subject: string, onMsg: (msg: Msg) => void): Subscription;

  /** Serves a request/reply contract. The handler's result is the reply; its rejection an error reply. */
  serve<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<z.input<Res>> | z.input<Res>,
    options: ServeOptions & ParamsArg<P>,
  ): Subscription;
  /** Serves a request/reply contract whose reply comes from elsewhere (`rpc.ts`). */
  serveForward<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<Forward>,
    options: ServeOptions & ParamsArg<P>,
  ): Subscription;
  /** Serves a streaming contract: the handler sends chunks and returns the end message. */
  serveStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
    contract: StreamContract<P, Req, Chunk, End>,
    handler: (req: z.infer<Req>, ctx: StreamContext<z.input<Chunk>>) => Promise<z.input<End>>,
    options: ServeOptions & StreamServeOptions & ParamsArg<P>,
  ): Subscription;
  /** Serves a streaming contract by relaying each request to a `target` stream handler (`relay.ts`). */
  serveRelay<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType, TP, TReq extends z.ZodType>(
    contract: StreamContract<P, Req, Chunk, End>,
    target: StreamContract<TP, TReq, z.ZodType, z.ZodType>,
    handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<RelayTarget<TP, z.input<TReq>>>,
    options: RelayOptions & ParamsArg<P>,
  ): Subscription;
  /** Calls a request/reply contract and returns the parsed reply. */
  call<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    request: z.input<Req>,
    options?: CallOptions & ParamsArg<P>,
  ): Promise<z.infer<Res>>;
  /** Calls a streaming contract; iterate the chunks, then await `result` for the end message. */
  callStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
    contract: StreamContract<P, Req, Chunk, End>,
    request: z.input<Req>,
    options?: StreamCallOptions & ParamsArg<P>,
  ): StreamCall<z.infer<Chunk>, z.infer<End>>;
  /** Publishes an event. Never waits on the network. */
  publish<P, Data extends z.ZodType>(contract: EventContract<P, Data>, data: z.input<Data>, ...params: [P] extends [void] ? [] : [P]): void;
  /** Subscribes to an event; invalid events are logged and dropped. */
  subscribe<P, Data extends z.ZodType>(
    contract: EventContract<P, Data>,
    handler: (data: z.infer<Data>, subject: string) => void | Promise<void>,
    options: { queue?: string } & ParamsArg<P>,
  ): Subscription;
  /** Answers this instance's health subject with what `check` reports. */
  serveHealth(check: () => HealthStatus | Promise<HealthStatus>): Subscription;
  /** Finds the instances of this cluster (same prefix) that answer `$SRV.INFO` within `timeoutMs`. */
  discover(options?: { service?: string; timeoutMs?: number }): Promise<InfoResponse[]>;
  /** Round-trip time to the NATS server, in ms; also a flush: the server has seen everything sent before. */
  rtt(): Promise<number>;
  /** Stops taking work, lets in-flight handlers finish (then aborts them), runs `beforeDisconnect`, drains. */
  close(options?: { graceMs?: number; beforeDisconnect?: () => Promise<void> }): Promise<void>;
}
