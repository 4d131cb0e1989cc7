/**
 * JetStream, owned by the bus: the one place where the services' streams, consumers, KV buckets
 * and object stores are created or opened (`Bus.jetstream`), with the defaults they share (file
 * storage, the bus's timeout, the replicas), and where JetStream's errors are told apart
 * ({@link isNotFound}, {@link isRevisionConflict}). A service says what it needs — `kv(name, {
 * history: 1 })`, `ensureStream(config)` — and never builds a JetStream client from the
 * connection itself.
 *
 * Replicas (`ATLAS_JS_REPLICAS`, {@link BusJetStreamOptions.replicas}) are set here and nowhere
 * else: every stream, bucket and object store created through this class gets them, and one that
 * exists with other replicas is changed to them (`STREAM.UPDATE`) or, when JetStream refuses,
 * fails the start with a {@link ReplicasError} naming the stream. Durable consumers inherit their
 * stream's replicas. docs/adr/0013-replicated-state.md.
 *
 * Who owns which bucket and stream is listed in docs/deployment.md ("Which state lives where").
 *
 * @module
 */
import {
  type ConsumerConfig,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
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
  /** Replicas of every stream, KV bucket and object store (`ATLAS_JS_REPLICAS`, 1–5); default 1. */
  replicas?: number;
  /** Told when an existing stream's replicas are changed. */
  log?: { info(obj: object, msg: string): void };
}

/** KV bucket options; the replicas are the bus's ({@link BusJetStreamOptions.replicas}). */
export type BucketOptions = Partial<Omit<KvOptions, "replicas">>;
/** Object store options; the replicas are the bus's. */
export type StoreOptions = Partial<Omit<ObjectStoreOptions, "replicas">>;

/** A stream, bucket or object store that has other replicas than configured, and JetStream would not change them. */
export class ReplicasError extends Error {
  override readonly name = "ReplicasError";

  constructor(
    /** The stream's name (`KV_<bucket>` for a bucket, `OBJ_<store>` for an object store). */
    readonly stream: string,
    /** The replicas it has; undefined when it could not be created with the configured ones. */
    readonly replicas: number | undefined,
    /** The configured replicas (`ATLAS_JS_REPLICAS`). */
    readonly configured: number,
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const hint =
      configured > 1
        ? `JetStream needs a cluster of at least ${configured} nats-server nodes for ${configured} replicas; or set ATLAS_JS_REPLICAS=${replicas ?? 1}.`
        : `Set ATLAS_JS_REPLICAS=${replicas ?? 1}, or change the stream's replicas with \`nats stream edit ${stream} --replicas ${configured}\`.`;
    super(
      replicas === undefined
        ? `Cannot create JetStream stream "${stream}" with ${configured} replica(s) (ATLAS_JS_REPLICAS=${configured}): ${reason}. ${hint}`
        : `JetStream stream "${stream}" has ${replicas} replica(s) but ATLAS_JS_REPLICAS is ${configured}, and they cannot be changed: ${reason}. ${hint}`,
      { cause },
    );
  }
}

/** The JetStream of one connection: clients, and the streams and buckets the services use. */
export class BusJetStream {
  /** Publishes to streams and reads them (consumers, direct gets). */
  readonly client: JetStreamClient;
  /** Replicas of every stream, bucket and object store this creates or checks. */
  readonly replicas: number;
  readonly #nc: NatsConnection;
  readonly #timeoutMs: number;
  readonly #log: BusJetStreamOptions["log"];
  #manager: Promise<JetStreamManager> | undefined;

  constructor(nc: NatsConnection, options: BusJetStreamOptions = {}) {
    this.#nc = nc;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.replicas = options.replicas ?? 1;
    if (!Number.isInteger(this.replicas) || this.replicas < 1 || this.replicas > 5) {
      throw new RangeError(`JetStream replicas must be an integer from 1 to 5 (got ${this.replicas})`);
    }
    this.#log = options.log;
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

  /**
   * Creates a KV bucket, or binds to it when it exists (file storage unless told); its replicas
   * are set, and so is its TTL when one is given (an existing bucket gets it: `ensureMaxAge`).
   */
  async kv(name: string, options: BucketOptions = {}): Promise<KV> {
    const kv = await this.#creating(`KV_${name}`, () =>
      new Kvm(this.client).create(name, { storage: "file", ...options, replicas: this.replicas }),
    );
    await this.ensureReplicas(`KV_${name}`);
    if (options.ttl !== undefined) await this.ensureMaxAge(`KV_${name}`, options.ttl);
    return kv;
  }

  /** Binds to a KV bucket that its owner created; fails when it does not exist. */
  openKv(name: string): Promise<KV> {
    return new Kvm(this.client).open(name);
  }

  /** Creates an object store, or binds to it when it exists (file storage unless told); its replicas are set. */
  async objectStore(name: string, options: StoreOptions = {}): Promise<ObjectStore> {
    const store = await this.#creating(`OBJ_${name}`, () =>
      new Objm(this.client).create(name, { storage: "file", ...options, replicas: this.replicas }),
    );
    await this.ensureReplicas(`OBJ_${name}`);
    return store;
  }

  /** Binds to an object store that its owner created; fails when it does not exist. */
  openObjectStore(name: string): Promise<ObjectStore> {
    return new Objm(this.client).open(name);
  }

  /**
   * Creates the stream when it is missing, with the bus's replicas (a `num_replicas` in `spec` is
   * overridden); an existing one is left as it is but for its replicas, which are set.
   */
  async ensureStream(spec: StreamSpec): Promise<void> {
    const jsm = await this.manager();
    try {
      await jsm.streams.info(spec.name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.#creating(spec.name, () => jsm.streams.add({ ...spec, num_replicas: this.replicas }));
    }
    await this.ensureReplicas(spec.name);
  }

  /**
   * Gives an existing stream (`KV_<bucket>`, `OBJ_<store>` or a stream's own name) the configured
   * replicas: nothing when it has them, else `STREAM.UPDATE` with `num_replicas` (JetStream moves
   * the data in the background; its durable consumers follow). Throws a {@link ReplicasError}
   * when JetStream refuses (fewer nodes than replicas), or before asking when the server is not
   * clustered and more than one replica is configured.
   */
  async ensureReplicas(stream: string): Promise<void> {
    const jsm = await this.manager();
    const info = await jsm.streams.info(stream);
    const have = info.config.num_replicas;
    if (have === this.replicas) return;
    // A single nats-server (2.9) takes the update and keeps one copy: refuse it here.
    if (this.replicas > 1 && info.cluster?.name === undefined) {
      throw new ReplicasError(stream, have, this.replicas, new Error("this nats-server is not part of a JetStream cluster"));
    }
    try {
      await jsm.streams.update(stream, { num_replicas: this.replicas });
    } catch (err) {
      throw new ReplicasError(stream, have, this.replicas, err);
    }
    this.#log?.info({ stream, from: have, to: this.replicas }, "Changed a JetStream stream's replicas to ATLAS_JS_REPLICAS");
  }

  /**
   * Gives an existing stream a message age limit of `ms` (a KV bucket's TTL): nothing when it has
   * it, else `STREAM.UPDATE` with `max_age`. For a bucket an older version created with another
   * TTL (`Kvm.create` binds to an existing bucket as it is).
   */
  async ensureMaxAge(stream: string, ms: number): Promise<void> {
    const jsm = await this.manager();
    const have = (await jsm.streams.info(stream)).config.max_age;
    const want = ms * 1_000_000;
    if (have === want) return;
    await jsm.streams.update(stream, { max_age: want });
    this.#log?.info({ stream, from_ms: have / 1_000_000, to_ms: ms }, "Changed a JetStream stream's message age limit");
  }

  /**
   * Creates a KV bucket whose stream has `settings` from its creation (e.g. `KEY_WRITER_STREAM_LOCKS`
   * of `@atlas/contracts`: no rollups, purges or message deletes), or binds to it as it is. Such
   * settings are never added to an existing stream: on a nats-server 2.9.10 cluster, a
   * `STREAM.UPDATE` that adds them makes a node that restarts later panic while it replays that
   * update (seen in test/cluster_nats.test.ts). Returns the bucket and the settings an existing
   * stream lacks (a boolean the server leaves out counts as false), for the caller to report.
   */
  async kvWith(
    name: string,
    options: { history?: number; ttlMs?: number; description?: string; settings: Partial<StreamConfig> },
  ): Promise<{ kv: KV; lacking: string[] }> {
    const stream = `KV_${name}`;
    await this.ensureStream({
      name: stream,
      subjects: [`$KV.${name}.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.New,
      max_msgs_per_subject: options.history ?? 1,
      allow_direct: true,
      ...(options.ttlMs === undefined ? {} : { max_age: options.ttlMs * 1_000_000 }),
      ...(options.description === undefined ? {} : { description: options.description }),
      ...options.settings,
    });
    const have = (await (await this.manager()).streams.info(stream)).config as unknown as Record<string, unknown>;
    const lacking = Object.entries(options.settings)
      .filter(([k, v]) => (typeof v === "boolean" ? (have[k] ?? false) : have[k]) !== v)
      .map(([k]) => k);
    return { kv: await this.openKv(name), lacking };
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

  /** Runs `create`; when JetStream cannot place the replicas, the error says which stream and how many were asked for. */
  async #creating<T>(stream: string, create: () => Promise<T>): Promise<T> {
    try {
      return await create();
    } catch (err) {
      if (this.replicas > 1 && isReplicasRefusal(err)) throw new ReplicasError(stream, undefined, this.replicas, err);
      throw err;
    }
  }
}

/**
 * Whether JetStream refused a stream's replicas: not clustered (10074), no suitable peers for
 * placement (10005: fewer nodes than replicas), insufficient resources (10023).
 */
function isReplicasRefusal(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return (
    e?.code === 10074 ||
    e?.code === 10005 ||
    e?.code === 10023 ||
    (typeof e?.message === "string" && /replicas|suitable peers|insufficient resources/i.test(e.message))
  );
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
