/**
 * Sessions as persistence serves them: the log (`log.ts`) behind an in-memory cache of recent
 * sessions, kept current across several persistence instances without extra messages.
 *
 * Every instance subscribes (core NATS) to the log's subjects. A record published into the log
 * reaches the stream *and* every instance as the same single message, so each instance's cache
 * follows every write, whoever made it:
 *
 * - a `layer` record is applied to a cached session when its `prev` (the record its writer saw
 *   last) is the cached session's last record — two writers racing on one session have the same
 *   `prev`, so the second one drops the entry instead of guessing the order;
 * - a `base` or `deleted` record drops the entry (a `base` may be refused by its revision check,
 *   and the others cannot tell), except a compaction of exactly the cached state;
 * - a write that JetStream refused after the others saw it is retracted with `memory.stale`;
 * - a disconnect drops everything (messages may have been missed); a cold read while records
 *   arrive replays them after the read.
 *
 * The recall path (`recall`, `current`) trusts the cache: no message at all. The CRUD path
 * (`validated`) checks the last record's id against the cache first (one lookup). A session
 * whose cold read crossed many records is compacted into one `base`, so cold reads stay short.
 * The revision-checked whole-session writes (`put`, `delete`, that compaction) are in
 * `session_writes.ts`; like every write, the cache learns of them from the log's messages.
 *
 * @module
 */
import { type Bus, BusError, type ConnectionChange, type Forward, type Msg } from "@atlas/bus";
import {
  appendMsgId,
  type SessionDocument as Doc,
  fitLayers,
  type MemoryLayer,
  MemoryLog,
  MemoryStale,
  type SessionSummary,
  sessionKey,
} from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { SessionCache } from "./cache.ts";
import type { SessionLog } from "./log.ts";
import { apply, copyState, emptyState, LogRecord, type Resolved, resolve, type SessionState, summaryOf } from "./records.ts";
import { SeenRecords } from "./seen_records.ts";
import { SessionWrites } from "./session_writes.ts";

/** Cold reads that crossed more records than this write one compacted `base`. */
export const COMPACT_RECORDS = 32;

/** Called for every record seen (the mirror marks the session dirty). */
export type ChangeListener = (tenant: string, sessionId: string, deleted: boolean) => void;

/** Options for {@link Sessions}. */
export interface SessionsOptions {
  bus: Bus;
  log: SessionLog;
  logger: Logger;
  /** Cache size, in bytes of stored JSON; default 64 MiB. */
  maxCacheBytes?: number;
}

interface Loading {
  buffer: { rec: Resolved; bytes: number }[];
  invalid: boolean;
}

/** What recall returns. */
export interface Recalled {
  found: boolean;
  layers: number;
  layers_total: number;
  messages: MemoryLayer["messages"];
  /** Messages per recalled layer, oldest first. */
  layer_sizes: number[];
}

const key = sessionKey;

/** Session memory over the log, with a cache shared by nothing but the log's own messages. */
export class Sessions {
  readonly #stats = { hits: 0, cold_reads: 0, compactions: 0, dropped: 0, writes: 0 };
  readonly log: SessionLog;
  /** Records seen lately on the log subscription (a recall waits for its caller's appends). */
  readonly seen = new SeenRecords();
  readonly #bus: Bus;
  readonly #logger: Logger;
  readonly #cache: SessionCache;
  readonly #writes: SessionWrites;
  readonly #loading = new Map<string, Loading>();
  readonly #loads = new Map<string, Promise<SessionState>>();
  readonly #listeners = new Set<ChangeListener>();
  #epoch = 0;

  constructor(options: SessionsOptions) {
    this.#bus = options.bus;
    this.log = options.log;
    this.#logger = options.logger;
    this.#cache = new SessionCache(options.maxCacheBytes ?? 64 * 1024 * 1024);
    this.#writes = new SessionWrites(options.log, options.logger, this.#stats);
  }

  /** Counters for health: cache hits, cold reads, compactions, dropped entries, writes, cache size. */
  get stats() {
    const { entries, bytes } = this.#cache.size;
    return { ...this.#stats, cached: entries, cached_bytes: bytes };
  }

  /** Listens to the log and to retractions, then learns which sessions exist. */
  async start(): Promise<void> {
    // Until the bus closes (after the handlers stop): a cache must not outlive its updates.
    this.#bus.watch(MemoryLog.wildcard(this.#bus.prefix), (msg) => this.#onRecord(msg));
    this.#bus.subscribe(MemoryStale, (d) => this.#forget(key(d.tenant, d.session_id)), {});
    await this.#bus.rtt(); // one round trip: the server has both subscriptions
    this.#bus.onConnectionChange((change) => this.#onConnectionChange(change));
    await this.#learnSessions();
  }

  /** Calls `listener` for every record seen, from any instance. */
  onChange(listener: ChangeListener): void {
    this.#listeners.add(listener);
  }

  /** Whether the log has any record of a session, as far as this instance knows (undefined: it does not know). */
  hasRecords(tenant: string, sessionId: string): boolean | undefined {
    return this.#cache.knows(key(tenant, sessionId));
  }

  /** The session as cached, else read from the log (recall, mirror). Callers must not change it. */
  async current(tenant: string, sessionId: string): Promise<SessionState> {
    const k = key(tenant, sessionId);
    const hit = this.#cache.get(k);
    if (hit !== undefined) {
      this.#stats.hits += 1;
      return hit;
    }
    if (this.#cache.knows(k) === false) {
      // A new session: cached empty, so the records of its first turns keep it current.
      this.#stats.hits += 1;
      const state = emptyState(tenant, sessionId);
      this.#cache.set(k, state);
      return state;
    }
    return this.#load(tenant, sessionId);
  }

  /** A copy of the session checked against its stored last record (one lookup), with its revision (CRUD). */
  async validated(tenant: string, sessionId: string): Promise<SessionState> {
    const k = key(tenant, sessionId);
    const last = await this.log.last(tenant, sessionId);
    if (last === null) {
      this.#cache.delete(k); // e.g. the store was wiped under a cached entry
      return emptyState(tenant, sessionId);
    }
    const hit = this.#cache.get(k);
    if (hit !== undefined && hit.lastId === last.rec.id) {
      hit.seq = last.seq;
      return copyState(hit);
    }
    const state = copyState(await this.#load(tenant, sessionId));
    state.seq ??= last.seq;
    return state;
  }

  /** The newest layers that fit, as messages (one exchange for the api; no message here when cached). */
  async recall(tenant: string, sessionId: string, maxLayers?: number, budgetTokens?: number): Promise<Recalled> {
    const doc = (await this.current(tenant, sessionId)).doc;
    if (doc === undefined) return { found: false, layers: 0, layers_total: 0, messages: [], layer_sizes: [] };
    const fit = fitLayers(doc.layers, budgetTokens ?? Number.POSITIVE_INFINITY, maxLayers);
    return {
      found: true,
      layers: fit.length,
      layers_total: doc.layers.length,
      messages: fit.flatMap((l) => l.messages),
      layer_sizes: fit.map((l) => l.messages.length),
    };
  }

  /** Appends one layer: one record, whatever the session's length. `duplicate` when JetStream dropped a repeat. */
  async add(tenant: string, sessionId: string, model: string | null, layer: MemoryLayer): Promise<{ duplicate: boolean }> {
    const k = key(tenant, sessionId);
    const known = this.#cache.get(k)?.ids.has(layer.id) === true;
    const rec = await this.log.layerRecord({ tenant, sessionId }, model, layer, this.#cache.lastId(k));
    try {
      const ack = await this.log.publish(tenant, sessionId, rec, { msgID: appendMsgId(tenant, sessionId, layer.id) });
      this.#stats.writes += 1;
      return { duplicate: ack.duplicate || known };
    } catch (err) {
      // Every instance may have applied the record it saw: retract it.
      this.#forget(k);
      this.#bus.publish(MemoryStale, { tenant, session_id: sessionId });
      if (rec.op === "layer" && rec.chunks !== undefined) await this.log.chunks.purge(tenant, sessionId, rec.chunks.gen).catch(() => {});
      throw new BusError("unavailable", `Cannot store the layer: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  /**
   * Appends one layer as a message for `serveForward`: JetStream acknowledges the record to the
   * caller, who retracts it (`memory.stale`) when JetStream refused it — the same record as
   * {@link add}, one message fewer.
   */
  async addMessage(tenant: string, sessionId: string, model: string | null, layer: MemoryLayer): Promise<Forward> {
    const rec = await this.log.layerRecord({ tenant, sessionId }, model, layer, this.#cache.lastId(key(tenant, sessionId)));
    this.#stats.writes += 1;
    return this.log.message(tenant, sessionId, rec, appendMsgId(tenant, sessionId, layer.id));
  }

  /** Writes a whole document as one `base` record, at `ifRevision` if given ({@link SessionWrites.put}). */
  put(doc: Doc, ifRevision?: number): Promise<{ created: boolean; revision: number; summary: SessionSummary }> {
    return this.#writes.put(doc, ifRevision);
  }

  /** Deletes a session (a `deleted` record stays); false when there was none. */
  delete(tenant: string, sessionId: string): Promise<boolean> {
    return this.#writes.delete(tenant, sessionId);
  }

  /** A page of a tenant's sessions, ordered by session id. */
  async list(
    tenant: string,
    options: { limit: number; after?: string | undefined },
  ): Promise<{ data: SessionSummary[]; has_more: boolean }> {
    const ids = [...(await this.log.sessions(tenant)).values()].map((s) => s.sessionId).sort();
    const after = options.after;
    const data: SessionSummary[] = [];
    for (const id of after === undefined ? ids : ids.filter((i) => i > after)) {
      if (data.length === options.limit) return { data, has_more: true };
      const state = await this.validated(tenant, id);
      if (state.doc !== undefined) data.push(summaryOf(state.doc, state.seq ?? 1));
    }
    return { data, has_more: false };
  }

  /** Chunk generations a session's live records point at (read from the log, for the collector). */
  async liveGenerations(tenant: string, sessionId: string): Promise<Set<string>> {
    return (await this.log.read(tenant, sessionId)).gens;
  }

  /** A cold read (shared by concurrent callers), replaying records that arrived meanwhile; cached. */
  #load(tenant: string, sessionId: string): Promise<SessionState> {
    const k = key(tenant, sessionId);
    const running = this.#loads.get(k);
    if (running !== undefined) return running;
    const p = (async () => {
      for (let attempt = 0; ; attempt++) {
        const epoch = this.#epoch;
        const loading: Loading = { buffer: [], invalid: false };
        this.#loading.set(k, loading);
        let state: SessionState;
        try {
          state = await this.log.read(tenant, sessionId);
          this.#stats.cold_reads += 1;
        } finally {
          this.#loading.delete(k);
        }
        if (loading.invalid || epoch !== this.#epoch) {
          if (attempt < 2) continue;
          return state; // still changing: answer from this read, cache nothing
        }
        for (const b of loading.buffer) apply(state, b.rec, { bytes: b.bytes });
        this.#cache.set(k, state);
        if (state.records > COMPACT_RECORDS && state.doc !== undefined && state.seq !== undefined) void this.#writes.compact(state);
        return state;
      }
    })().finally(() => this.#loads.delete(k));
    this.#loads.set(k, p);
    return p;
  }

  #onRecord(msg: Msg): void {
    const who = this.log.parse(msg.subject);
    if (who === undefined) return;
    const k = key(who.tenant, who.sessionId);
    const isNew = this.#cache.know(k);
    let rec: LogRecord;
    let resolved: Resolved | undefined;
    try {
      rec = LogRecord.parse(msg.json());
      // Unresolved (a cold read later) when the payload is in chunks or its data key is not loaded.
      const inline = this.log.inlinePayload(who.tenant, who.sessionId, rec);
      if (inline !== undefined) resolved = resolve(rec, inline.payload, who);
    } catch {
      this.#drop(k);
      return;
    }
    const bytes = msg.data.length;
    for (const l of this.#listeners) l(who.tenant, who.sessionId, rec.op === "deleted");
    const loading = this.#loading.get(k);
    if (loading !== undefined) {
      if (resolved?.op === "layer") loading.buffer.push({ rec: resolved, bytes });
      else loading.invalid = true;
    } else {
      const entry = this.#cache.get(k);
      if (entry === undefined) {
        // The first record of a new session (its writer and this instance agree): cached from here.
        if (isNew && resolved?.op === "layer" && resolved.prev === null) {
          const state = emptyState(who.tenant, who.sessionId);
          apply(state, resolved, { bytes });
          this.#cache.set(k, state);
        }
      } else if (resolved?.op === "layer" && resolved.prev !== undefined && resolved.prev === entry.lastId) {
        const before = entry.size;
        apply(entry, resolved, { bytes });
        this.#cache.grew(entry.size - before);
      } else if (rec.op === "base" && rec.compacts !== undefined && rec.compacts === entry.lastId) {
        Object.assign(entry, {
          lastId: rec.id,
          seq: undefined,
          records: 1,
          gens: new Set(rec.chunks === undefined ? [] : [rec.chunks.gen]),
        });
      } else this.#drop(k);
    }
    this.#cache.setLastId(k, rec.id);
    this.seen.note(rec.id);
  }

  #drop(k: string): void {
    if (this.#cache.delete(k)) this.#stats.dropped += 1;
    const loading = this.#loading.get(k);
    if (loading !== undefined) loading.invalid = true;
  }

  #forget(k: string): void {
    this.#drop(k);
    this.#cache.forgetLastId(k);
  }

  /** Learns every session the log has (so a new session's first recall needs no lookup). */
  async #learnSessions(): Promise<void> {
    const epoch = this.#epoch;
    try {
      const all = await this.log.sessions();
      if (epoch === this.#epoch) this.#cache.learn(all.keys(), all.size);
    } catch (err) {
      this.#logger.warn({ err }, "Cannot list the sessions of the log; every unknown session costs one lookup");
    }
  }

  /** A disconnect may have lost records: forget everything, and learn the sessions again once back. */
  #onConnectionChange(change: ConnectionChange): void {
    this.#epoch += 1;
    this.#cache.clear();
    for (const l of this.#loading.values()) l.invalid = true;
    if (change === "reconnect") void this.#learnSessions();
  }
}
