/**
 * The session log's records (log format 2) and how a session's state follows from them.
 *
 * A session is the subject `<prefix>.memory.log.<tenant>.<session token>` of the stream
 * `<prefix>_memory_log`; its messages, oldest first, are:
 *
 * - `base`: a whole document (a `PUT`, an import, a format-1 migration, or a compaction), which
 *   replaces everything before it;
 * - `layer`: one appended layer (and the model that answered), added unless its layer id is
 *   already in the document;
 * - `deleted`: the session was deleted (kept so the mirror import can tell "deleted on purpose"
 *   from "lost with the store").
 *
 * A payload (the document, the layer) is inline — as JSON (`doc`, `layer`: written without a
 * master key when too small to compress, or before envelopes) or as an envelope of its JSON
 * (`sealed`, base64; compressed and/or encrypted, `@atlas/sealed`) — or in chunks when large
 * (`chunks.ts`; the chunks then hold the envelope). The stream sequence of the last record is
 * the session's revision.
 *
 * @module
 */
import {
  type SessionDocument as Doc,
  MemoryLayer,
  SessionDocument,
  type SessionSummary,
  type MemoryLayer as TLayer,
} from "@atlas/contracts";
import { z } from "zod";
import { ChunkRef } from "./chunks.ts";

/** The log format this code reads and writes. */
export const LOG_FORMAT = 2 as const;

const Common = { v: z.literal(LOG_FORMAT), id: z.string().min(1).max(240), at: z.iso.datetime() };

/** One record of a session log, as stored (payloads unresolved). */
export const LogRecord = z.discriminatedUnion("op", [
  z
    .object({
      ...Common,
      op: z.literal("base"),
      /** A compaction: the id of the last record this base summarizes (the content did not change). */
      compacts: z.string().optional(),
      doc: z.unknown().optional(),
      /** The document's JSON in an envelope (`@atlas/sealed`), base64: compressed and/or encrypted. */
      sealed: z.string().optional(),
      chunks: ChunkRef.optional(),
    })
    .strict(),
  z
    .object({
      ...Common,
      op: z.literal("layer"),
      /** Id of the record the writer saw last (null: none); left out when it did not know. */
      prev: z.string().nullable().optional(),
      model: z.string().min(1).max(256).nullable(),
      layer: z.unknown().optional(),
      /** The layer's JSON in an envelope (`@atlas/sealed`), base64: compressed and/or encrypted. */
      sealed: z.string().optional(),
      chunks: ChunkRef.optional(),
    })
    .strict(),
  z.object({ ...Common, op: z.literal("deleted") }).strict(),
]);
/** One record of a session log, as stored. */
export type LogRecord = z.infer<typeof LogRecord>;

/** A record with its payload resolved (read from its chunks when it had them). */
export type Resolved =
  | { op: "base"; id: string; at: string; compacts?: string | undefined; doc: Doc }
  | { op: "layer"; id: string; at: string; prev?: string | null | undefined; model: string | null; layer: TLayer }
  | { op: "deleted"; id: string; at: string };

/** The id of a layer record (a layer's id is unique within its session). */
export const layerRecordId = (layerId: string): string => `l:${layerId}`;

/** What a session is, as far as the records applied so far say. */
export interface SessionState {
  tenant: string;
  sessionId: string;
  /** The document; undefined when the session does not exist (never made, or deleted). */
  doc: Doc | undefined;
  /** Whether the last record is a delete. */
  deleted: boolean;
  /** Id of the last record applied (null: the session has no records at all). */
  lastId: string | null;
  /** Stream sequence of the last record, when known (a record seen in flight has none yet). */
  seq: number | undefined;
  /** Layer ids of `doc`. */
  ids: Set<string>;
  /** Records since the last base (or since the start): long runs are compacted into one base. */
  records: number;
  /** Chunk generations the live records point at. */
  gens: Set<string>;
  /** Approximate size in bytes (cache accounting). */
  size: number;
}

/** The state of a session without records. */
export function emptyState(tenant: string, sessionId: string): SessionState {
  return { tenant, sessionId, doc: undefined, deleted: false, lastId: null, seq: 0, ids: new Set(), records: 0, gens: new Set(), size: 64 };
}

/** Applies one record (resolved) to a state, in place. */
export function apply(
  state: SessionState,
  rec: Resolved,
  meta: { seq?: number | undefined; bytes: number; gen?: string | undefined },
): void {
  state.lastId = rec.id;
  state.seq = meta.seq;
  if (rec.op === "base") {
    state.doc = rec.doc;
    state.deleted = false;
    state.ids = new Set(rec.doc.layers.map((l) => l.id));
    state.records = 1;
    state.gens = new Set(meta.gen === undefined ? [] : [meta.gen]);
    state.size = meta.bytes + 64;
    return;
  }
  if (rec.op === "deleted") {
    Object.assign(state, { doc: undefined, deleted: true, ids: new Set(), records: 1, gens: new Set(), size: 64 });
    return;
  }
  state.records += 1;
  if (meta.gen !== undefined) state.gens.add(meta.gen);
  if (state.ids.has(rec.layer.id)) return; // idempotent: a layer id is added once
  const doc: Doc = state.doc ?? {
    version: 1,
    session_id: state.sessionId,
    tenant: state.tenant,
    created_at: rec.at,
    updated_at: rec.at,
    model: rec.model,
    layers: [],
    metadata: {},
  };
  doc.layers.push(rec.layer);
  doc.updated_at = rec.at;
  doc.model = rec.model ?? doc.model;
  state.doc = doc;
  state.deleted = false;
  state.ids.add(rec.layer.id);
  state.size += meta.bytes;
}

/** Checks a resolved payload: a base's document (of this session) or a layer. */
export function resolve(rec: LogRecord, payload: unknown, who: { tenant: string; sessionId: string }): Resolved {
  if (rec.op === "deleted") return rec;
  if (rec.op === "base") {
    const doc = SessionDocument.safeParse(payload);
    if (!doc.success) throw new Error(`invalid document: ${doc.error.issues[0]?.message}`);
    if (doc.data.tenant !== who.tenant || doc.data.session_id !== who.sessionId) throw new Error("document of another session");
    return { op: "base", id: rec.id, at: rec.at, compacts: rec.compacts, doc: doc.data };
  }
  const layer = MemoryLayer.safeParse(payload);
  if (!layer.success) throw new Error(`invalid layer: ${layer.error.issues[0]?.message}`);
  return { op: "layer", id: rec.id, at: rec.at, prev: rec.prev, model: rec.model, layer: layer.data };
}

/** A copy of a state (callers get copies; the cache keeps its own). */
export function copyState(s: SessionState): SessionState {
  return {
    ...s,
    doc: s.doc === undefined ? undefined : { ...s.doc, layers: [...s.doc.layers] },
    ids: new Set(s.ids),
    gens: new Set(s.gens),
  };
}

const encoder = new TextEncoder();

/** Size of a document's JSON, in bytes. */
export function byteLength(doc: Doc): number {
  return encoder.encode(JSON.stringify(doc)).length;
}

/** The listing view of a document. */
export function summaryOf(doc: Doc, revision: number, bytes = byteLength(doc)): SessionSummary {
  return {
    session_id: doc.session_id,
    created_at: doc.created_at,
    updated_at: doc.updated_at,
    model: doc.model,
    layers: doc.layers.length,
    bytes,
    revision,
  };
}

/** The newest layers: at most `layers` of them, whose message text totals at most `bytes`. */
export function tail<L extends { messages: { content: string }[] }>(all: L[], layers?: number, bytes?: number): L[] {
  let out = layers === undefined ? all : all.slice(Math.max(0, all.length - layers));
  if (bytes !== undefined) {
    let total = 0;
    let keep = 0;
    for (let i = out.length - 1; i >= 0; i--) {
      total += out[i]?.messages.reduce((s, m) => s + Buffer.byteLength(m.content), 0) ?? 0;
      if (total > bytes) break;
      keep += 1;
    }
    out = out.slice(out.length - keep);
  }
  return out;
}
