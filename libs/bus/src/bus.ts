/**
 * The actor runtime over NATS: serve and call contracts, stream many chunks with explicit end,
 * error, idle timeout and cancellation, publish and subscribe events, answer NATS micro
 * discovery, and drain on shutdown; the connection's JetStream (`jetstream.ts`) and its
 * ups and downs (`connection.ts`).
 *
 * Rules it keeps: the receiver validates the request; the caller parses the reply; an async
 * handler's rejection is always turned into an error reply (never a caller timeout).
 *
 * @module
 */
import { type EventContract, Health, type HealthReport, type InfoResponse, type RpcContract, type StreamContract } from "@atlas/contracts";
import { connect, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import type { z } from "zod";
import type { Bus as BusApi } from "./bus_api.ts";
import { callStream, type StreamCall } from "./caller.ts";
import { decode, encode, errorOf, Header, makeHeaders } from "./codec.ts";
import { type ConnectionChange, ConnectionWatch } from "./connection.ts";
import type { BusCore, BusOptions, HealthStatus } from "./core.ts";
import { discover, type EndpointRecord, serveDiscovery } from "./discovery.ts";
import { BusError, natsFailure, raceAbort } from "./errors.ts";
import { serveStream } from "./handler.ts";
import { BusJetStream } from "./jetstream.ts";
import { StreamMux } from "./mux.ts";
import { serveRelay } from "./relay.ts";
import { type Forward, serveRpc } from "./rpc.ts";
import {
  type BusLogger,
  type CallOptions,
  type HandlerContext,
  type ParamsArg,
  type RelayOptions,
  type RelayTarget,
  type ServeOptions,
  type StreamCallOptions,
  type StreamContext,
  type StreamServeOptions,
  silentLogger,
} from "./types.ts";

interface InFlight {
  controller: AbortController;
  done: Promise<unknown>;
}

/** One connection to NATS on behalf of one service instance: the `Bus` (`bus_api.ts`) over NATS. */
export class NatsBus implements BusApi, BusCore {
  readonly nc: NatsConnection;
  readonly prefix: string;
  readonly service: { name: string; version: string; description: string };
  readonly instance: string;
  readonly startedAt = new Date();
  readonly log: BusLogger;
  readonly defaultTimeoutMs: number;
  readonly #subs = new Set<Subscription>();
  readonly #endpoints: EndpointRecord[] = [];
  readonly #inFlight = new Set<InFlight>();
  #discovery: Subscription[] = [];
  #mux: StreamMux | undefined;
  /** This connection's JetStream: streams, consumers, KV buckets and object stores (`jetstream.ts`). */
  readonly jetstream: BusJetStream;
  readonly #connection: ConnectionWatch;
  #closing = false;
  #metadata: Record<string, string>;

  private constructor(nc: NatsConnection, options: BusOptions) {
    this.nc = nc;
    this.prefix = options.prefix;
    this.service = { description: "", ...options.service };
    this.instance = options.instance ?? crypto.randomUUID().replaceAll("-", "");
    this.log = options.logger ?? silentLogger;
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 5000;
    this.jetstream = new BusJetStream(nc, { timeoutMs: this.defaultTimeoutMs, replicas: options.replicas ?? 1, log: this.log });
    this.#metadata = { ...options.metadata };
    this.#connection = new ConnectionWatch(nc, this.log);
  }

  /** Discovery metadata of this instance, always including the cluster prefix. */
  get metadata(): Record<string, string> {
    return { ...this.#metadata, atlas_prefix: this.prefix };
  }

  /** Replaces the extra discovery metadata (a worker sets its model once it is loaded). */
  setMetadata(metadata: Record<string, string>): void {
    this.#metadata = { ...metadata };
  }

  /** Connects to NATS and starts answering discovery requests. */
  static async connect(options: BusOptions): Promise<NatsBus> {
    const nc = await connect({
      servers: options.servers,
      name: `${options.service.name}`,
      waitOnFirstConnect: options.waitOnFirstConnect ?? true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // The client would build an Error (with a stack) up front for every request, only to keep
      // a trace for a timeout that rarely comes: 7–11% of a busy service's CPU (benchmarks.md).
      noAsyncTraces: true,
      noRandomize: options.noRandomize ?? false,
      ...(options.user === undefined ? {} : { user: options.user, pass: options.pass ?? "" }),
    });
    const bus = new NatsBus(nc, options);
    if (options.discoverable !== false) bus.#discovery = serveDiscovery(bus, bus.#endpoints);
    return bus;
  }

  /** True once {@link close} has begun. */
  get closing(): boolean {
    return this.#closing;
  }

  /** Whether the connection is open (it may be reconnecting) and {@link close} has not begun. */
  get connected(): boolean {
    return !this.#closing && !this.nc.isClosed();
  }

  /** Calls `listener` when the connection drops or comes back (messages may have been missed in between). */
  onConnectionChange(listener: (change: ConnectionChange) => void): () => void {
    return this.#connection.on(listener);
  }

  /** Raw messages (`bus_api.ts`); not drained when {@link close} begins: a cache sees updates until the last handler is done. */
  watch(subject: string, onMsg: (msg: Msg) => void): Subscription {
    return this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err === null) onMsg(msg);
      },
    });
  }

  /** The version of the NATS server this bus is connected to. */
  get serverVersion(): string | undefined {
    return this.nc.info?.version;
  }

  /** Serves a request/reply contract. The handler's result is the reply; its rejection an error reply. */
  serve<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<z.input<Res>> | z.input<Res>,
    options: ServeOptions & ParamsArg<P>,
  ): Subscription {
    return this.#serveRpc(contract, options, async (req, ctx) => ({ reply: await handler(req, ctx) }));
  }

  /**
   * Serves a request/reply contract whose reply comes from elsewhere: the handler returns one
   * message, which is published with the caller's reply subject, and its receiver answers the
   * caller (e.g. JetStream's acknowledgement of a stored message). See `rpc.ts`.
   */
  serveForward<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<Forward>,
    options: ServeOptions & ParamsArg<P>,
  ): Subscription {
    return this.#serveRpc(contract, options, async (req, ctx) => ({ forward: await handler(req, ctx) }));
  }

  /**
   * Serves a streaming contract: the handler sends chunks and returns the end message. Chunks
   * sent close together share one message (`options.flushMs`, `maxBatchBytes`, `startDelayMs`).
   */
  serveStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
    contract: StreamContract<P, Req, Chunk, End>,
    handler: (req: z.infer<Req>, ctx: StreamContext<z.input<Chunk>>) => Promise<z.input<End>>,
    options: ServeOptions & StreamServeOptions & ParamsArg<P>,
  ): Subscription {
    const subject = contract.subject(this.prefix, options.params as P);
    const record = this.#record(contract.name, subject, options);
    return this.#subscribe(subject, options, (msg) => {
      const controller = new AbortController();
      const done = serveStream(this, contract, handler, msg, controller, record, options);
      this.#track(controller, done);
    });
  }

  /** Serves a streaming contract by relaying each request to a `target` stream handler (`relay.ts`). */
  serveRelay<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType, TP, TReq extends z.ZodType>(
    contract: StreamContract<P, Req, Chunk, End>,
    target: StreamContract<TP, TReq, z.ZodType, z.ZodType>,
    handler: (req: z.infer<Req>, ctx: HandlerContext) => Promise<RelayTarget<TP, z.input<TReq>>>,
    options: RelayOptions & ParamsArg<P>,
  ): Subscription {
    const subject = contract.subject(this.prefix, options.params as P);
    const record = this.#record(contract.name, subject, options);
    return this.#subscribe(subject, options, (msg) => {
      const controller = new AbortController();
      const done = serveRelay(this, contract, target, handler, msg, controller, record, options);
      this.#track(controller, done);
    });
  }

  /** @internal The shared stream inbox of this connection (one subscription, created on first use). */
  streamMux(): StreamMux {
    this.#mux ??= new StreamMux(this.nc, this.log);
    return this.#mux;
  }

  /** Calls a request/reply contract and returns the parsed reply. */
  async call<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    request: z.input<Req>,
    options: CallOptions & ParamsArg<P> = {} as CallOptions & ParamsArg<P>,
  ): Promise<z.infer<Res>> {
    const subject = contract.subject(this.prefix, options.params as P);
    const timeout = options.timeoutMs ?? this.defaultTimeoutMs;
    options.signal?.throwIfAborted();
    const pending = this.nc.request(subject, encode(request), {
      timeout,
      headers: makeHeaders({ [Header.requestId]: options.requestId }),
    });
    let msg: Msg;
    try {
      msg = await raceAbort(pending, options.signal);
    } catch (err) {
      throw natsFailure(err, subject, timeout);
    }
    const err = errorOf(msg);
    if (err !== undefined) throw err;
    let body: unknown;
    try {
      body = decode(msg.data);
    } catch (cause) {
      throw new BusError("bad_reply", `Reply on "${subject}" is not JSON`, { cause });
    }
    const parsed = contract.response.safeParse(body);
    if (!parsed.success) {
      throw new BusError("bad_reply", `Reply on "${subject}" does not match "${contract.name}"`, { cause: parsed.error });
    }
    return parsed.data;
  }

  /** Calls a streaming contract; iterate the chunks, then await `result` for the end message. */
  callStream<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType>(
    contract: StreamContract<P, Req, Chunk, End>,
    request: z.input<Req>,
    options: StreamCallOptions & ParamsArg<P> = {} as StreamCallOptions & ParamsArg<P>,
  ): StreamCall<z.infer<Chunk>, z.infer<End>> {
    return callStream(this, contract, request, options);
  }

  /** Publishes an event. Never waits on the network. */
  publish<P, Data extends z.ZodType>(
    contract: EventContract<P, Data>,
    data: z.input<Data>,
    ...params: [P] extends [void] ? [] : [P]
  ): void {
    if (this.nc.isClosed()) return;
    this.nc.publish(contract.subject(this.prefix, params[0] as P), encode(data));
  }

  /** Subscribes to an event; invalid events are logged and dropped. */
  subscribe<P, Data extends z.ZodType>(
    contract: EventContract<P, Data>,
    handler: (data: z.infer<Data>, subject: string) => void | Promise<void>,
    options: { queue?: string } & ParamsArg<P>,
  ): Subscription {
    const subject = contract.subject(this.prefix, options.params as P);
    return this.#subscribe(subject, { queue: options.queue ?? false }, (msg) => {
      let parsed: z.ZodSafeParseResult<z.infer<Data>>;
      try {
        parsed = contract.data.safeParse(decode(msg.data));
      } catch (err) {
        this.log.warn({ err, subject: msg.subject }, "Dropped an event that is not JSON");
        return;
      }
      if (!parsed.success) {
        this.log.warn({ subject: msg.subject, issues: parsed.error.issues.slice(0, 3) }, "Dropped an invalid event");
        return;
      }
      Promise.resolve()
        .then(() => handler(parsed.data, msg.subject))
        .catch((err: unknown) => this.log.error({ err, subject: msg.subject }, "Event handler failed"));
    });
  }

  /** Answers this instance's health subject with what `check` reports. */
  serveHealth(check: () => HealthStatus | Promise<HealthStatus>): Subscription {
    return this.serve(
      Health,
      async (): Promise<HealthReport> => {
        const s = await check();
        return {
          service: this.service.name,
          instance: this.instance,
          version: this.service.version,
          state: s.state,
          started_at: this.startedAt.toISOString(),
          uptime_s: (Date.now() - this.startedAt.getTime()) / 1000,
          checks: s.checks ?? {},
          ...(s.details === undefined ? {} : { details: s.details }),
        };
      },
      { params: { service: this.service.name, instance: this.instance }, queue: false },
    );
  }

  /** Finds the instances of this cluster (same prefix) that answer `$SRV.INFO` within `timeoutMs`. */
  discover(options: { service?: string; timeoutMs?: number } = {}): Promise<InfoResponse[]> {
    return discover(this, options);
  }

  /** Round-trip time to the NATS server, in ms (sub-millisecond resolution). */
  async rtt(): Promise<number> {
    const t0 = performance.now();
    await this.nc.flush();
    return performance.now() - t0;
  }

  /**
   * Stops taking work, lets in-flight handlers finish for up to `graceMs` (then aborts them),
   * runs `beforeDisconnect` (the connection still open: a worker saves its sessions there), and
   * drains the connection. Safe to call twice.
   */
  async close(options: { graceMs?: number; beforeDisconnect?: () => Promise<void> } = {}): Promise<void> {
    if (this.#closing) return this.nc.closed().then(() => undefined);
    this.#closing = true;
    const graceMs = options.graceMs ?? 5000;
    await Promise.allSettled([...this.#subs].map((s) => s.drain()));
    const inFlight = [...this.#inFlight];
    if (inFlight.length > 0) {
      const timer = setTimeout(() => {
        for (const f of inFlight) f.controller.abort(new BusError("cancelled", "Service is shutting down"));
      }, graceMs);
      await Promise.allSettled(inFlight.map((f) => f.done));
      clearTimeout(timer);
    }
    if (options.beforeDisconnect !== undefined && !this.nc.isClosed()) {
      await options.beforeDisconnect().catch((err: unknown) => this.log.error({ err }, "Work before disconnecting failed"));
    }
    for (const s of this.#discovery) s.unsubscribe();
    if (!this.nc.isClosed()) await this.nc.drain().catch(() => this.nc.close());
  }

  #serveRpc<P, Req extends z.ZodType, Res extends z.ZodType>(
    contract: RpcContract<P, Req, Res>,
    options: ServeOptions & ParamsArg<P>,
    answer: Parameters<typeof serveRpc<Req>>[2],
  ): Subscription {
    const subject = contract.subject(this.prefix, options.params as P);
    const record = this.#record(contract.name, subject, options);
    return this.#subscribe(subject, options, (msg) => {
      const controller = new AbortController();
      const done = serveRpc(this, contract as RpcContract<unknown, Req, Res>, answer, msg, controller, record);
      this.#track(controller, done);
    });
  }

  /** @internal Subscribes and remembers the subscription for drain. */
  #subscribe(subject: string, options: ServeOptions, onMsg: (msg: Msg) => void): Subscription {
    const queue = options.queue === false ? undefined : (options.queue ?? this.service.name);
    const sub = this.nc.subscribe(subject, {
      ...(queue === undefined ? {} : { queue }),
      callback: (err, msg) => {
        if (err !== null) {
          this.log.error({ err, subject }, "Subscription failed");
          return;
        }
        try {
          onMsg(msg);
        } catch (e) {
          this.log.error({ err: e, subject }, "Message handler threw");
        }
      },
    });
    this.#subs.add(sub);
    void sub.closed.then(() => this.#subs.delete(sub));
    return sub;
  }

  #record(name: string, subject: string, options: ServeOptions): EndpointRecord {
    const queue = options.queue === false ? undefined : (options.queue ?? this.service.name);
    const record: EndpointRecord = {
      name,
      subject,
      ...(queue === undefined ? {} : { queue }),
      metadata: options.metadata ?? {},
      requests: 0,
      errors: 0,
      lastError: "",
      processingNs: 0n,
    };
    this.#endpoints.push(record);
    return record;
  }

  #track(controller: AbortController, done: Promise<unknown>): void {
    const entry: InFlight = { controller, done };
    this.#inFlight.add(entry);
    void done.finally(() => this.#inFlight.delete(entry));
  }
}

/** `Bus.connect(options)`: a bus over a new NATS connection (`NatsBus`, which tests may use for its connection). */
export const Bus = { connect: (options: BusOptions): Promise<NatsBus> => NatsBus.connect(options) } as const;
/** What a service may do with the bus (`bus_api.ts`). */
export type Bus = BusApi;
