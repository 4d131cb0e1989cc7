/**
 * JetStream, owned by the bus: the one place where the services' streams, consumers, KV buckets
 * and object stores are created or opened (`Bus.jetstream`), with the defaults they share (file
 * storage, the bus's timeout), and where JetStream's errors are told apart ({@link isNotFound},
 * {@link isRevisionConflict}). A service says what it needs — `kv(name, { history: 1 })`,
 * `ensureStream(config)` — and never builds a JetStream client from the connection itself.
 *
 * Who owns which bucket and stream is listed in docs/architecture.md ("Where state lives").
 *
 * @module
 */
import {
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm, type KvOptions } from "@nats-io/kv";
import { type ObjectStore, type ObjectStoreOptions, Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";

/** What a stream needs to be created: its name and subjects, the rest as JetStream's defaults. */
export type StreamSpec = Partial<StreamConfig> & { name: string; subjects: string[] };

/** A durable consumer's configuration. */
export type ConsumerSpec = Partial<ConsumerConfig> & { durable_name: string };

/** Options for {@link BusJetStream}. */
export interface BusJetStreamOptions {
  /** Timeout of each JetStream API request, ms; default 5000. */
  timeoutMs?: number;
}

/** The JetStream of one connection: clients, and the streams and buckets the services use. */
export class BusJetStream {
  /** Publishes to streams and reads them (consumers, direct gets). */
  readonly client: JetStreamClient;
  readonly #nc: NatsConnection;
  readonly #timeoutMs: number;
  #manager: Promise<JetStreamManager> | undefined;

  constructor(nc: NatsConnection, options: BusJetStreamOptions = {}) {
    this.#nc = nc;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.client = jetstream(nc, { timeout: this.#timeoutMs });
  }

  /** The stream and consumer administration (created once; a failed attempt is tried again next time). */
  manager(): Promise<JetStreamManager> {
    this.#manager ??= jetstreamManager(this.#nc, { timeout: this.#timeoutMs }).catch((err: unknown) => {
      this.#manager = undefined;
      throw err;
    });
    return this.#manager;
  }

  /** Creates a KV bucket, or binds to it when it exists (file storage unless told). */
  kv(name: string, options: Partial<KvOptions> = {}): Promise<KV> {
    return new Kvm(this.client).create(name, { storage: "file", ...options });
  }

  /** Binds to a KV bucket that its owner created; fails when it does not exist. */
  openKv(name: string): Promise<KV> {
    return new Kvm(this.client).open(name);
  }

  /** Creates an object store, or binds to it when it exists (file storage unless told). */
  objectStore(name: string, options: Partial<ObjectStoreOptions> = {}): Promise<ObjectStore> {
    return new Objm(this.client).create(name, { storage: "file", ...options });
  }

  /** Binds to an object store that its owner created; fails when it does not exist. */
  openObjectStore(name: string): Promise<ObjectStore> {
    return new Objm(this.client).open(name);
  }

  /** Creates the stream when it is missing (an existing one is left as it is). */
  async ensureStream(spec: StreamSpec): Promise<void> {
    const jsm = await this.manager();
    try {
      await jsm.streams.info(spec.name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await jsm.streams.add({ ...spec });
    }
  }

  /** Creates the stream's durable consumer when it is missing. */
  async ensureConsumer(stream: string, spec: ConsumerSpec): Promise<void> {
    const jsm = await this.manager();
    try {
      await jsm.consumers.info(stream, spec.durable_name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await jsm.consumers.add(stream, { ...spec });
    }
  }
}

/** Whether a JetStream API error says the stream, consumer or message does not exist. */
export function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown };
  return (
    e?.code === 10059 ||
    e?.code === 10014 ||
    e?.name === "StreamNotFoundError" ||
    e?.name === "ConsumerNotFoundError" ||
    (typeof e?.message === "string" && /not found/i.test(e.message))
  );
}

/** Whether an error is JetStream's "wrong last sequence" (a revision check that failed). */
export function isRevisionConflict(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === 10071 || (typeof e?.message === "string" && /wrong last sequence/i.test(e.message));
}
