/**
 * The api's side of session memory: calls to persistence — `memory.recall` and `memory.add` for
 * a chat turn (one exchange each; persistence owns recall, fitting and storage), and
 * `memory.{get,list,put,delete}` for the CRUD endpoints.
 *
 * Calls go through persistence's circuit breaker (`downstream.ts`): while it is open they fail
 * at once with `unavailable` (carrying the breaker's retry delay) instead of each waiting for a
 * timeout. An append that persistence does not answer (no responders, timeout, breaker open, or
 * it says it cannot store now) is not lost: it is published to the durable fallback stream,
 * which persistence drains in order when it is back. That publish is retried until JetStream
 * has stored it (a NATS outage loses core publishes and times out JetStream ones);
 * `Nats-Msg-Id` makes a retried publish land once, and persistence applies a layer id once.
 * Appends still in flight are remembered per session: a recall names them (`after_layers`) and
 * persistence answers once their records have reached it, and a read (`GET`) waits for them
 * first, so a client that sends its next turn right after an answer finds that answer in memory.
 * The fallback stream's publisher is `fallback.ts`.
 *
 * @module
 */
import { type Bus, BusError } from "@atlas/bus";
import {
  type LayerUsage,
  MemoryAddLayer,
  MemoryDelete,
  MemoryGet,
  type MemoryLayer,
  MemoryList,
  MemoryMessage,
  MemoryPut,
  MemoryRecall,
  MemoryStale,
  type PayloadRef,
  SessionDocument,
  type SessionSummary,
  sessionKey,
} from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { type CircuitBreaker, CircuitOpenError } from "../breaker.ts";
import type { AppDeps } from "../deps.ts";
import { FallbackStream } from "./fallback.ts";
import { Transfers } from "./transfers.ts";
import { replyKey, TransitSealer } from "./transit.ts";

/** Recalled messages; a large recall comes through the transfer store, unchecked until here. */
const RecalledMessages = z.array(MemoryMessage);

const clients = new WeakMap<AppDeps, MemoryClient>();

/** The memory client of an app (one per app, created on first use). */
export function memoryClient(app: FastifyInstance): MemoryClient {
  let c = clients.get(app.deps);
  if (c === undefined) {
    c = new MemoryClient({ bus: app.deps.bus, log: app.deps.log, breaker: app.guard.breakers.persistence });
    clients.set(app.deps, c);
  }
  return c;
}

/** A session document with the revision it was read at. */
export interface ReadDocument {
  doc: SessionDocument;
  revision: number;
  /** Layers in the stored document (`doc` may hold fewer when a tail was asked). */
  layersTotal: number;
}

/** Options of every call. */
export interface MemoryCallOptions {
  requestId?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Options for {@link MemoryClient}. */
export interface MemoryClientOptions {
  bus: Bus;
  log: Logger;
  /** How long an append keeps retrying before it is given up (logged as lost); default 10 min. */
  appendRetryMs?: number;
  /** The persistence circuit breaker; default none. */
  breaker?: CircuitBreaker;
}

/** What {@link MemoryClient.append} stores. */
export interface AppendInput {
  tenant: string;
  sessionId: string;
  model: string | null;
  layer: MemoryLayer;
}

/** How an append ended: stored by persistence, or queued in the durable fallback stream. */
export type AppendOutcome = "stored" | "queued";

/** What {@link MemoryClient.recall} returns. */
export interface RecallResult {
  found: boolean;
  /** Layers recalled, and layers in the session. */
  layers: number;
  layersTotal: number;
  /** The recalled messages, oldest first. */
  messages: MemoryMessage[];
  /** Messages per recalled layer, oldest first (absent from an older persistence). */
  layerSizes?: number[];
}

/** How long `memory.add` may take before the append goes to the fallback stream. */
const ADD_TIMEOUT_MS = 3000;

/** Session memory as the api uses it. */
export class MemoryClient {
  readonly #bus: Bus;
  readonly #log: Logger;
  readonly #fallback: FallbackStream;
  readonly #breaker: CircuitBreaker | undefined;
  /** Appends in flight by session key: each one's promise, with its layer's id. */
  readonly #pending = new Map<string, Map<Promise<unknown>, string>>();
  readonly #transit: TransitSealer;
  readonly #transfers: Transfers;
  #closed = false;

  constructor(options: MemoryClientOptions) {
    this.#bus = options.bus;
    this.#log = options.log;
    this.#transit = new TransitSealer(options.bus);
    this.#transfers = new Transfers(options.bus, this.#transit);
    this.#fallback = new FallbackStream({
      js: options.bus.jetstream.client,
      prefix: options.bus.prefix,
      log: options.log,
      retryMs: options.appendRetryMs ?? 10 * 60_000,
      pack: (layer) => this.#transfers.run((c) => c.pack(layer, "append")),
      seal: (json, context) => this.#transit.seal(json, context),
      closed: () => this.#closed,
    });
    this.#breaker = options.breaker;
  }

  /** Runs a call to persistence through its breaker; an open breaker is an `unavailable` at once. */
  async #guarded<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#breaker === undefined) return fn();
    try {
      return await this.#breaker.run(fn);
    } catch (err) {
      if (!(err instanceof CircuitOpenError)) throw err;
      throw new BusError("unavailable", "Session memory is unavailable (its circuit breaker is open)", {
        retryAfterS: Math.max(1, Math.ceil(err.retryAfterMs / 1000)),
        cause: err,
      });
    }
  }

  /**
   * What a chat turn recalls from a session, in one exchange: persistence picks the newest layers
   * (at most `maxLayers`) that fit `budgetTokens` and returns their messages.
   */
  async recall(
    tenant: string,
    sessionId: string,
    options: MemoryCallOptions & { maxLayers?: number | undefined; budgetTokens?: number | undefined } = {},
  ): Promise<RecallResult> {
    // This api's appends of the session still in flight: persistence answers once it has them.
    const after = [...(this.#pending.get(sessionKey(tenant, sessionId))?.values() ?? [])].slice(-32);
    const r = await this.#guarded(() =>
      this.#bus.call(
        MemoryRecall,
        {
          tenant,
          session_id: sessionId,
          ...(after.length === 0 ? {} : { after_layers: after }),
          ...replyKey(this.#transit),
          ...(options.maxLayers === undefined ? {} : { max_layers: options.maxLayers }),
          ...(options.budgetTokens === undefined ? {} : { budget_tokens: Math.max(0, Math.floor(options.budgetTokens)) }),
        },
        callOptions(options),
      ),
    );
    const raw = r.ref === undefined ? r.messages : await this.#transfers.run((c) => c.take(r.ref as NonNullable<typeof r.ref>));
    const messages = RecalledMessages.safeParse(raw);
    if (!messages.success)
      throw new BusError("bad_reply", `Recall of session "${sessionId}" from persistence is invalid`, { cause: messages.error });
    const sizes = r.layer_sizes ?? [];
    const consistent = sizes.length === r.layers && sizes.reduce((a, b) => a + b, 0) === messages.data.length;
    return {
      found: r.found,
      layers: r.layers,
      layersTotal: r.layers_total,
      messages: messages.data,
      ...(consistent ? { layerSizes: sizes } : {}),
    };
  }

  /** Reads a session (optionally only its newest layers); `not_found` when it does not exist. */
  async get(
    tenant: string,
    sessionId: string,
    options: MemoryCallOptions & { tailLayers?: number; tailBytes?: number; settleMs?: number } = {},
  ): Promise<ReadDocument> {
    const r = await this.#guarded(() =>
      this.#bus.call(
        MemoryGet,
        {
          tenant,
          session_id: sessionId,
          ...(options.tailLayers === undefined ? {} : { tail_layers: options.tailLayers }),
          ...(options.tailBytes === undefined ? {} : { tail_bytes: Math.max(0, Math.floor(options.tailBytes)) }),
          ...(options.settleMs === undefined ? {} : { settle_ms: options.settleMs }),
          ...replyKey(this.#transit),
        },
        callOptions(options),
      ),
    );
    const raw = r.ref === undefined ? r.document : await this.#transfers.run((c) => c.take(r.ref as NonNullable<typeof r.ref>));
    const parsed = SessionDocument.safeParse(raw);
    if (!parsed.success) throw new BusError("bad_reply", `Session "${sessionId}" from persistence is invalid`, { cause: parsed.error });
    return { doc: parsed.data, revision: r.revision, layersTotal: r.layers_total };
  }

  /** A page of a tenant's sessions. */
  list(tenant: string, page: { limit: number; after?: string | undefined }, options: MemoryCallOptions = {}) {
    return this.#guarded(() =>
      this.#bus.call(
        MemoryList,
        { tenant, limit: page.limit, ...(page.after === undefined ? {} : { after: page.after }) },
        callOptions(options),
      ),
    );
  }

  /** Creates or replaces a session (`ifRevision`: only at that revision, 0 = only if new). */
  async put(
    doc: SessionDocument,
    options: MemoryCallOptions & { ifRevision?: number } = {},
  ): Promise<{ created: boolean; session: SessionSummary }> {
    const packed = await this.#transfers.run((c) => c.pack(doc, "put"));
    try {
      return await this.#guarded(() =>
        this.#bus.call(
          MemoryPut,
          {
            tenant: doc.tenant,
            session_id: doc.session_id,
            ...(packed.ref === undefined ? { document: doc } : { ref: packed.ref }),
            ...(options.ifRevision === undefined ? {} : { if_revision: options.ifRevision }),
          },
          callOptions(options),
        ),
      );
    } catch (err) {
      if (packed.ref !== undefined) await this.#transfers.run((c) => c.drop(packed.ref as NonNullable<typeof packed.ref>)).catch(() => {});
      throw err;
    }
  }

  /** Deletes a session; `not_found` when there is none. */
  delete(tenant: string, sessionId: string, options: MemoryCallOptions = {}) {
    return this.#guarded(() => this.#bus.call(MemoryDelete, { tenant, session_id: sessionId }, callOptions(options)));
  }

  /**
   * Appends a layer: `memory.add` (persistence stores it and answers: `stored`), or, when
   * persistence does not answer, the durable fallback stream (`queued`: JetStream holds it and
   * persistence applies it when it is back; retried through outages). Rejects when persistence
   * refuses the layer, or when the fallback gives up or the client closes.
   */
  append(input: AppendInput): Promise<AppendOutcome> {
    const key = sessionKey(input.tenant, input.sessionId);
    const set = this.#pending.get(key) ?? new Map<Promise<unknown>, string>();
    this.#pending.set(key, set);
    const p = this.#append(input).finally(() => {
      set.delete(p);
      if (set.size === 0 && this.#pending.get(key) === set) this.#pending.delete(key);
    });
    set.set(p, input.layer.id);
    return p;
  }

  /** Waits (at most `timeoutMs`) for this api's appends of a session that are still in flight. */
  async settled(tenant: string, sessionId: string, timeoutMs = 2000): Promise<void> {
    const set = this.#pending.get(sessionKey(tenant, sessionId));
    if (set === undefined || set.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...set.keys()]),
      new Promise((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Appends still in flight (for status and tests). */
  get pendingAppends(): number {
    let n = 0;
    for (const s of this.#pending.values()) n += s.size;
    return n;
  }

  /** Stops retrying; waits up to `graceMs` for appends in flight, and logs any that are lost. */
  async close(graceMs = 2000): Promise<void> {
    const all = [...this.#pending.values()].flatMap((s) => [...s.keys()]);
    if (all.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled(all), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    this.#closed = true;
    if (this.pendingAppends > 0) this.#log.error({ appends: this.pendingAppends }, "Session memory appends lost at shutdown");
  }

  async #append(input: AppendInput): Promise<AppendOutcome> {
    let ref: PayloadRef | undefined;
    /** JetStream refused the record persistence published. */
    let refused = false;
    try {
      const packed = await this.#transfers.run((c) => c.pack(input.layer, "put"));
      ref = packed.ref;
      await this.#guarded(async () => {
        // Persistence publishes the layer's record with this call's reply subject: the answer is
        // JetStream's own acknowledgement (or its refusal).
        const ack = await this.#bus.call(
          MemoryAddLayer,
          {
            tenant: input.tenant,
            session_id: input.sessionId,
            model: input.model,
            ...(packed.ref === undefined ? { layer: input.layer } : { ref: packed.ref }),
          },
          { timeoutMs: ADD_TIMEOUT_MS },
        );
        if ("error" in ack) {
          refused = true;
          throw new BusError("unavailable", `JetStream did not store the layer: ${ack.error.description ?? ack.error.code}`, {
            retryAfterS: 1,
            cause: ack.error,
          });
        }
      });
      return "stored";
    } catch (err) {
      // Persistence refused this layer (invalid, or a bug): the fallback would not do better.
      if (!(err instanceof BusError) || !err.retryable) throw err;
      // Refused by JetStream, or no answer: persistence's instances may have applied a record that
      // was not stored. They drop the session from their caches and read it again when asked.
      if (refused || err.code === "timeout") this.#bus.publish(MemoryStale, { tenant: input.tenant, session_id: input.sessionId });
      if (ref !== undefined) await this.#transfers.run((c) => c.drop(ref as PayloadRef)).catch(() => {});
      this.#log.info(
        { err: err.message, layer: input.layer.id },
        "Persistence did not store the append; queuing it in the fallback stream",
      );
    }
    await this.#fallback.publish(input);
    return "queued";
  }
}

function callOptions(o: MemoryCallOptions) {
  return {
    ...(o.requestId === undefined ? {} : { requestId: o.requestId }),
    ...(o.signal === undefined ? {} : { signal: o.signal }),
    timeoutMs: o.timeoutMs ?? 5000,
  };
}

/** Usage of a layer from an engine's token counts. */
export function layerUsage(u: { prompt_tokens: number; completion_tokens: number }): LayerUsage {
  return { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.prompt_tokens + u.completion_tokens };
}
