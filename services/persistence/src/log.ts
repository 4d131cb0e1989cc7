/**
 * The session log in JetStream: stream `<prefix>_memory_log`, one subject per session, one
 * message per record (`records.ts`). This file only talks to JetStream: publish a record
 * (optionally revision-checked with `Nats-Expected-Last-Subject-Sequence`, de-duplicated with
 * `Nats-Msg-Id`), read a session's records, purge the ones a base made obsolete, and list the
 * sessions of a tenant. The cache and its rules are in `sessions.ts`.
 *
 * @module
 */
import {
  BusError,
  type BusJetStream,
  type Forward,
  type JetStreamClient,
  type JetStreamManager,
  type PubAck,
  type StoredMsg,
} from "@atlas/bus";
import {
  type SessionDocument as Doc,
  type MemoryLayer,
  MemoryLog,
  MemorySessionId,
  sessionFromToken,
  sessionKey,
  TenantId,
} from "@atlas/contracts";
import { SealedError, type Sealer, tenantScope } from "@atlas/sealed";
import { CHUNK_BYTES, type ChunkRef, type Chunks } from "./chunks.ts";
import { apply, emptyState, LOG_FORMAT, LogRecord, layerRecordId, type Resolved, resolve, type SessionState } from "./records.ts";

/** One stored record. */
export interface LogEntry {
  seq: number;
  rec: LogRecord;
  /** Size of the message, in bytes. */
  bytes: number;
}

const encoder = new TextEncoder();
/** JetStream's de-duplication header. */
const MSG_ID = "Nats-Msg-Id";
const decoder = new TextDecoder();

/** Creates the log stream when it is missing. */
export function ensureLogStream(jetstream: BusJetStream, prefix: string): Promise<void> {
  return jetstream.ensureStream({ ...MemoryLog.stream(prefix) });
}

/** Every session's records. */
export class SessionLog {
  readonly stream: string;
  readonly chunks: Chunks;
  /** Compresses and encrypts payloads at rest (`@atlas/sealed`). */
  readonly sealer: Sealer;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #prefix: string;

  constructor(options: { js: JetStreamClient; jsm: JetStreamManager; prefix: string; chunks: Chunks; sealer: Sealer }) {
    this.sealer = options.sealer;
    this.#js = options.js;
    this.#jsm = options.jsm;
    this.#prefix = options.prefix;
    this.chunks = options.chunks;
    this.stream = MemoryLog.stream(options.prefix).name;
  }

  /** The subject of a session. */
  subject(tenant: string, sessionId: string): string {
    return MemoryLog.subject(this.#prefix, { tenant, session_id: sessionId });
  }

  /** Tenant and session of a log subject, or undefined when it is not one. */
  parse(subject: string): { tenant: string; sessionId: string } | undefined {
    const head = `${this.#prefix}.memory.log.`;
    if (!subject.startsWith(head)) return undefined;
    const [tenant, token, extra] = subject.slice(head.length).split(".");
    if (tenant === undefined || token === undefined || extra !== undefined || !TenantId.safeParse(tenant).success) return undefined;
    try {
      const sessionId = sessionFromToken(token);
      return MemorySessionId.safeParse(sessionId).success ? { tenant, sessionId } : undefined;
    } catch {
      return undefined;
    }
  }

  /** A layer record; a large layer goes to chunks first. */
  async layerRecord(
    who: { tenant: string; sessionId: string },
    model: string | null,
    layer: MemoryLayer,
    prev: string | null | undefined,
  ): Promise<LogRecord> {
    const head = { v: LOG_FORMAT, op: "layer" as const, id: layerRecordId(layer.id), at: new Date().toISOString(), model };
    const withPrev = prev === undefined ? head : { ...head, prev };
    const stored = await this.#payload(who.tenant, who.sessionId, layer);
    return "value" in stored ? { ...withPrev, layer: stored.value } : { ...withPrev, ...stored };
  }

  /** A base record holding a whole document; a large one goes to chunks first. */
  async baseRecord(doc: Doc, compacts?: string): Promise<LogRecord> {
    const head = { v: LOG_FORMAT, op: "base" as const, id: `b:${crypto.randomUUID()}`, at: new Date().toISOString() };
    const withCompacts = compacts === undefined ? head : { ...head, compacts };
    const stored = await this.#payload(doc.tenant, doc.session_id, doc);
    return "value" in stored ? { ...withCompacts, doc: stored.value } : { ...withCompacts, ...stored };
  }

  /**
   * How a payload is stored: an envelope (compressed, encrypted with the tenant's data key when a
   * master key is configured, bound to the session), inline as base64 or in chunks when large;
   * as plain JSON only when there is no key and it is too small to compress.
   */
  async #payload(
    tenant: string,
    sessionId: string,
    value: unknown,
  ): Promise<{ value: unknown } | { sealed: string } | { chunks: ChunkRef }> {
    const json = encoder.encode(JSON.stringify(value));
    if (!this.sealer.encrypted && json.length < this.sealer.minCompressBytes) return { value };
    const sealed = await this.sealer.seal(tenantScope(tenant), json, sessionKey(tenant, sessionId));
    if (sealed.length <= CHUNK_BYTES) return { sealed: Buffer.from(sealed).toString("base64") };
    return { chunks: await this.chunks.put(tenant, sessionId, sealed) };
  }

  /**
   * The payload of a record that holds it inline, without I/O (the log subscription): undefined
   * when it needs reading (chunks) or a data key not loaded yet. Throws for a refused envelope.
   */
  inlinePayload(tenant: string, sessionId: string, rec: LogRecord): { payload: unknown } | undefined {
    if (rec.op === "deleted") return { payload: undefined };
    if (rec.chunks !== undefined) return undefined;
    if (rec.sealed === undefined) {
      this.sealer.acceptPlain(); // written before envelopes (or small, without a key)
      return { payload: rec.op === "base" ? rec.doc : rec.layer };
    }
    const plain = this.sealer.openCached(Buffer.from(rec.sealed, "base64"), sessionKey(tenant, sessionId));
    return plain === undefined ? undefined : { payload: JSON.parse(decoder.decode(plain)) };
  }

  /** A delete record. */
  deletedRecord(): LogRecord {
    return { v: LOG_FORMAT, op: "deleted", id: `d:${crypto.randomUUID()}`, at: new Date().toISOString() };
  }

  /**
   * Publishes a record. `expect`: only when the session's last record has this sequence (0: no
   * record), else a revision conflict. `msgID`: JetStream drops a repeat within two minutes.
   */
  publish(tenant: string, sessionId: string, rec: LogRecord, options: { msgID?: string; expect?: number } = {}): Promise<PubAck> {
    return this.#js.publish(this.subject(tenant, sessionId), encoder.encode(JSON.stringify(rec)), {
      timeout: 5000,
      ...(options.msgID === undefined ? {} : { msgID: options.msgID }),
      ...(options.expect === undefined ? {} : { expect: { lastSubjectSequence: options.expect } }),
    });
  }

  /**
   * A record as a message to publish with someone else's reply subject (`serveForward`): JetStream
   * acknowledges it to them. `msgID` as in {@link publish}.
   */
  message(tenant: string, sessionId: string, rec: LogRecord, msgID: string): Forward {
    return { subject: this.subject(tenant, sessionId), data: encoder.encode(JSON.stringify(rec)), headers: { [MSG_ID]: msgID } };
  }

  /** The last record of a session, or null when it has none. */
  async last(tenant: string, sessionId: string): Promise<LogEntry | null> {
    return this.#entry(await this.#jsm.streams.getMessage(this.stream, { last_by_subj: this.subject(tenant, sessionId) }));
  }

  /** The first record of a session at or after `seq`, or null. */
  async next(tenant: string, sessionId: string, seq: number): Promise<LogEntry | null> {
    const query = { seq, next_by_subj: this.subject(tenant, sessionId) } as unknown as { seq: number };
    return this.#entry(await this.#jsm.streams.getMessage(this.stream, query));
  }

  /** A record with its payload; undefined when its chunks are gone (a newer record superseded it). */
  async resolve(tenant: string, sessionId: string, rec: LogRecord): Promise<Resolved | undefined> {
    try {
      let payload: unknown;
      if (rec.op === "base" || rec.op === "layer") {
        let stored: Uint8Array | undefined;
        if (rec.chunks !== undefined) {
          stored = await this.chunks.read(tenant, sessionId, rec.chunks);
          if (stored === undefined) return undefined;
        } else if (rec.sealed !== undefined) stored = Buffer.from(rec.sealed, "base64");
        else this.sealer.acceptPlain(); // written before envelopes (or small, without a key)
        payload =
          stored === undefined
            ? rec.op === "base"
              ? rec.doc
              : rec.layer
            : JSON.parse(decoder.decode(await this.sealer.open(stored, sessionKey(tenant, sessionId))));
      }
      return resolve(rec, payload, { tenant, sessionId });
    } catch (err) {
      if (err instanceof BusError) throw err;
      const what = err instanceof SealedError ? "a record that cannot be opened" : "an invalid record";
      throw new BusError("internal", `Session "${sessionId}" of tenant "${tenant}" holds ${what} (${rec.id}): ${String(err)}`, {
        retryable: false,
      });
    }
  }

  /**
   * Reads a session from its records (a cold read: two messages per record). Retried when a
   * concurrent base or delete purged records under the reader.
   */
  async read(tenant: string, sessionId: string): Promise<SessionState> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const state = emptyState(tenant, sessionId);
      const last = await this.last(tenant, sessionId);
      if (last === null) return state;
      if (last.rec.op !== "layer") {
        const r = await this.resolve(tenant, sessionId, last.rec);
        if (r === undefined) continue;
        apply(state, r, { seq: last.seq, bytes: last.bytes, gen: genOf(last.rec) });
        return state;
      }
      let seq = 0;
      let complete = true;
      while (seq < last.seq) {
        const e = seq + 1 === last.seq ? last : await this.next(tenant, sessionId, seq + 1);
        if (e === null) {
          complete = false; // purged under the reader
          break;
        }
        seq = e.seq;
        const r = await this.resolve(tenant, sessionId, e.rec);
        if (r === undefined) {
          if (e.rec.op === "layer") continue; // its chunks went with a delete racing it
          complete = false;
          break;
        }
        apply(state, r, { seq: e.seq, bytes: e.bytes, gen: genOf(e.rec) });
      }
      if (complete) return state;
    }
    throw new BusError("conflict", `Session "${sessionId}" keeps changing while it is read; retry`, { retryable: true });
  }

  /** Removes a session's records older than `seq` (what a base or a delete made obsolete). */
  async purgeBefore(tenant: string, sessionId: string, seq: number): Promise<void> {
    // Nothing is older than sequence 1; and nats-server 2.9 purges the whole subject for `seq: 1`.
    if (seq <= 1) return;
    await this.#jsm.streams.purge(this.stream, { filter: this.subject(tenant, sessionId), seq });
  }

  /** Sessions with records (of one tenant, or all), with their record counts. */
  async sessions(tenant?: string): Promise<Map<string, { tenant: string; sessionId: string; records: number }>> {
    const info = await this.#jsm.streams.info(this.stream, { subjects_filter: MemoryLog.wildcard(this.#prefix, tenant) });
    const out = new Map<string, { tenant: string; sessionId: string; records: number }>();
    for (const [subject, records] of Object.entries(info.state.subjects ?? {})) {
      const who = this.parse(subject);
      if (who !== undefined) out.set(sessionKey(who.tenant, who.sessionId), { ...who, records });
    }
    return out;
  }

  /** Stream state for health. */
  async state(): Promise<{ messages: number; bytes: number; sessions: number }> {
    const info = await this.#jsm.streams.info(this.stream);
    return { messages: info.state.messages, bytes: info.state.bytes, sessions: info.state.num_subjects ?? 0 };
  }

  #entry(m: StoredMsg | null): LogEntry | null {
    if (m === null) return null;
    const parsed = LogRecord.safeParse(m.json());
    if (!parsed.success) {
      throw new BusError("internal", `Record ${m.seq} of "${m.subject}" is invalid: ${parsed.error.issues[0]?.message}`, {
        retryable: false,
      });
    }
    return { seq: m.seq, rec: parsed.data, bytes: m.data.length };
  }
}

/** The chunk generation a record points at, if any. */
export function genOf(rec: LogRecord): string | undefined {
  return rec.op === "deleted" ? undefined : rec.chunks?.gen;
}
