/**
 * Session documents in one JetStream KV bucket, scoped by tenant.
 *
 * Keys (tenant ids are already key-safe; session ids are base64url, see `sessionToken`):
 * - `s.<tenant>.<session>`: the manifest — a summary plus the document itself when its JSON is
 *   at most {@link CHUNK_BYTES}, or the list of its chunks;
 * - `c.<tenant>.<session>.<gen>.<i>`: chunk `i` of generation `gen` of a larger document.
 *
 * A write puts the new generation's chunks first, then swaps the manifest with a
 * revision-checked `create`/`update`; only then are the old generation's chunks purged (one
 * stream purge by subject filter, which leaves no markers). A writer that loses the race purges
 * its own chunks and tries again from a fresh read, so concurrent writers never lose a layer.
 * A reader that finds a chunk gone (a newer write won meanwhile) reads the manifest again.
 * Deleting a session leaves a delete marker on its manifest: the mirror import uses it to tell
 * "deleted on purpose" from "lost with the JetStream store".
 *
 * Every document is validated with {@link SessionDocument} on every read and every write.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { BusError } from "@atlas/bus";
import {
  type SessionDocument as Doc,
  type MemoryLayer,
  SessionDocument,
  type SessionSummary,
  sessionFromToken,
  sessionToken,
} from "@atlas/contracts";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import { z } from "zod";

/** Largest document kept inside its manifest, and the size of each chunk of a larger one. */
export const CHUNK_BYTES = 256 * 1024;

/** Chunk generations younger than this are never collected (a writer may be about to commit them). */
const ORPHAN_GRACE_MS = 10 * 60_000;

const Manifest = z.object({
  v: z.literal(1),
  tenant: z.string(),
  session_id: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  model: z.string().nullable(),
  layers: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  body: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("inline"), doc: z.unknown() }),
    z.object({ kind: z.literal("chunks"), gen: z.string(), count: z.number().int().positive(), sha256: z.string() }),
  ]),
});
type Manifest = z.infer<typeof Manifest>;

/** A document as stored, with the revision of its manifest. */
export interface StoredDocument {
  doc: Doc;
  revision: number;
  /** Size of the document's JSON in bytes. */
  bytes: number;
}

/** What the manifest key holds: nothing, a delete marker, or a live session. */
export type ManifestState =
  | { state: "missing" }
  | { state: "deleted"; revision: number }
  | { state: "present"; revision: number; manifest: Manifest };

/** Options for {@link SessionStore}. */
export interface SessionStoreOptions {
  kv: KV;
  jsm: JetStreamManager;
  /** The KV bucket's name (its stream is `KV_<bucket>`). */
  bucket: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Whether an error is JetStream's "wrong last sequence" (a revision check that failed). */
export function isRevisionConflict(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === 10071 || (typeof e?.message === "string" && /wrong last sequence/i.test(e.message));
}

/** Session documents of every tenant, in one KV bucket. */
export class SessionStore {
  readonly kv: KV;
  readonly #jsm: JetStreamManager;
  readonly #bucket: string;
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(options: SessionStoreOptions) {
    this.kv = options.kv;
    this.#jsm = options.jsm;
    this.#bucket = options.bucket;
  }

  /** The manifest key of a session. */
  static manifestKey(tenant: string, sessionId: string): string {
    return `s.${tenant}.${sessionToken(sessionId)}`;
  }

  /** Tenant and session id of a manifest key, or undefined when the key is not one. */
  static parseManifestKey(key: string): { tenant: string; sessionId: string } | undefined {
    const m = /^s\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(key);
    if (m?.[1] === undefined || m[2] === undefined) return undefined;
    try {
      return { tenant: m[1], sessionId: sessionFromToken(m[2]) };
    } catch {
      return undefined;
    }
  }

  /** What the manifest key of a session holds. */
  async manifest(tenant: string, sessionId: string): Promise<ManifestState> {
    const entry = await this.kv.get(SessionStore.manifestKey(tenant, sessionId));
    return manifestState(entry, `${tenant}/${sessionId}`);
  }

  /** Reads a session; undefined when it does not exist. */
  async read(tenant: string, sessionId: string): Promise<StoredDocument | undefined> {
    const { current, doc } = await this.#load(tenant, sessionId);
    if (current.state !== "present" || doc === undefined) return undefined;
    return { doc, revision: current.revision, bytes: current.manifest.bytes };
  }

  /** The manifest and the validated document; retried when a concurrent write swapped the chunks. */
  async #load(tenant: string, sessionId: string): Promise<{ current: ManifestState; doc?: Doc }> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.manifest(tenant, sessionId);
      if (current.state !== "present") return { current };
      const body = current.manifest.body;
      let doc: unknown;
      if (body.kind === "inline") doc = body.doc;
      else {
        const bytes = await this.#readChunks(tenant, sessionId, body.gen, body.count);
        if (bytes === undefined) continue; // a newer write purged this generation: read again
        const sha = createHash("sha256").update(bytes).digest("hex");
        if (sha !== body.sha256) {
          throw new BusError("internal", `Session "${sessionId}" of tenant "${tenant}" is corrupt: checksum mismatch`, {
            retryable: false,
          });
        }
        doc = JSON.parse(decoder.decode(bytes));
      }
      const parsed = SessionDocument.safeParse(doc);
      if (!parsed.success) {
        throw new BusError(
          "internal",
          `Stored session "${sessionId}" of tenant "${tenant}" is invalid: ${parsed.error.issues[0]?.message}`,
          {
            retryable: false,
            cause: parsed.error,
          },
        );
      }
      return { current, doc: parsed.data };
    }
    throw new BusError("conflict", `Session "${sessionId}" keeps changing while it is read; retry`, { retryable: true });
  }

  /**
   * Writes a whole document. With `ifRevision` the write happens only at that revision
   * (0: only when the session does not exist), else it fails with `conflict`; without it the
   * document replaces whatever is stored.
   */
  async write(doc: Doc, options: { ifRevision?: number } = {}): Promise<{ revision: number; created: boolean; summary: SessionSummary }> {
    const valid = SessionDocument.parse(doc);
    return this.#locked(valid.tenant, valid.session_id, async () => {
      for (let attempt = 0; ; attempt++) {
        const current = await this.manifest(valid.tenant, valid.session_id);
        const currentRevision = current.state === "present" ? current.revision : 0;
        if (options.ifRevision !== undefined && options.ifRevision !== currentRevision) {
          throw new BusError("conflict", `Session "${valid.session_id}" is at revision ${currentRevision}, not ${options.ifRevision}`);
        }
        try {
          const revision = await this.#commit(valid, current);
          return { revision, created: current.state !== "present", summary: summaryOf(valid, revision, byteLength(valid)) };
        } catch (err) {
          if (!isRevisionConflict(err) || options.ifRevision !== undefined || attempt >= 20) throw conflictOr(err, valid.session_id);
        }
      }
    });
  }

  /**
   * Read-modify-write with revision checks: `change` gets the current document (or undefined)
   * and returns the next one, or undefined to leave it as is. Retried on a concurrent write.
   */
  async mutate(tenant: string, sessionId: string, change: (doc: Doc | undefined) => Doc | undefined): Promise<StoredDocument | undefined> {
    return this.#locked(tenant, sessionId, async () => {
      for (let attempt = 0; ; attempt++) {
        const { current, doc } = await this.#load(tenant, sessionId);
        const next = change(doc);
        if (next === undefined) {
          return current.state === "present" && doc !== undefined
            ? { doc, revision: current.revision, bytes: current.manifest.bytes }
            : undefined;
        }
        const valid = SessionDocument.parse(next);
        try {
          const revision = await this.#commit(valid, current);
          return { doc: valid, revision, bytes: byteLength(valid) };
        } catch (err) {
          if (!isRevisionConflict(err) || attempt >= 20) throw conflictOr(err, sessionId);
        }
      }
    });
  }

  /** Appends a layer unless a layer with its id is already there (idempotent); true when it was added. */
  async appendLayer(input: { tenant: string; sessionId: string; model: string | null; layer: MemoryLayer; now?: Date }): Promise<boolean> {
    let added = false;
    await this.mutate(input.tenant, input.sessionId, (doc) => {
      if (doc?.layers.some((l) => l.id === input.layer.id)) return undefined;
      added = true;
      const now = (input.now ?? new Date()).toISOString();
      const base: Doc = doc ?? {
        version: 1,
        session_id: input.sessionId,
        tenant: input.tenant,
        created_at: now,
        updated_at: now,
        model: input.model,
        layers: [],
        metadata: {},
      };
      return { ...base, updated_at: now, model: input.model ?? base.model, layers: [...base.layers, input.layer] };
    });
    return added;
  }

  /** Deletes a session (a delete marker stays on its manifest); false when there was none. */
  async delete(tenant: string, sessionId: string): Promise<boolean> {
    return this.#locked(tenant, sessionId, async () => {
      for (let attempt = 0; ; attempt++) {
        const current = await this.manifest(tenant, sessionId);
        if (current.state !== "present") return false;
        try {
          await this.kv.delete(SessionStore.manifestKey(tenant, sessionId), { previousSeq: current.revision });
        } catch (err) {
          if (isRevisionConflict(err) && attempt < 20) continue;
          throw err;
        }
        if (current.manifest.body.kind === "chunks") await this.#purgeGeneration(tenant, sessionId, current.manifest.body.gen);
        return true;
      }
    });
  }

  /** A page of a tenant's sessions, ordered by session id. */
  async list(
    tenant: string,
    options: { limit: number; after?: string | undefined },
  ): Promise<{ data: SessionSummary[]; has_more: boolean }> {
    const ids: string[] = [];
    for await (const key of await this.kv.keys(`s.${tenant}.*`)) {
      const parsed = SessionStore.parseManifestKey(key);
      if (parsed !== undefined && parsed.tenant === tenant) ids.push(parsed.sessionId);
    }
    ids.sort();
    const after = options.after;
    const rest = after === undefined ? ids : ids.filter((id) => id > after);
    const data: SessionSummary[] = [];
    for (const id of rest) {
      if (data.length === options.limit) return { data, has_more: true };
      const m = await this.manifest(tenant, id);
      if (m.state !== "present") continue; // deleted since the key listing
      data.push({
        session_id: id,
        created_at: m.manifest.created_at,
        updated_at: m.manifest.updated_at,
        model: m.manifest.model,
        layers: m.manifest.layers,
        bytes: m.manifest.bytes,
        revision: m.revision,
      });
    }
    return { data, has_more: false };
  }

  /** Purges chunk generations that no manifest points at and that are older than the grace period. */
  async collectOrphans(now = Date.now()): Promise<number> {
    const generations = new Map<string, { tenant: string; token: string; gen: string }>();
    for await (const key of await this.kv.keys("c.>")) {
      const m = /^c\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([a-z0-9]+-[a-z0-9]+)\.\d+$/.exec(key);
      if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) continue;
      generations.set(`${m[1]}.${m[2]}.${m[3]}`, { tenant: m[1], token: m[2], gen: m[3] });
    }
    let purged = 0;
    for (const g of generations.values()) {
      const born = Number.parseInt(g.gen.split("-")[0] ?? "", 36);
      if (!Number.isFinite(born) || now - born < ORPHAN_GRACE_MS) continue;
      const entry = await this.kv.get(`s.${g.tenant}.${g.token}`);
      const m = manifestState(entry, g.token);
      if (m.state === "present" && m.manifest.body.kind === "chunks" && m.manifest.body.gen === g.gen) continue;
      await this.#purgeSubject(`c.${g.tenant}.${g.token}.${g.gen}.*`);
      purged += 1;
    }
    return purged;
  }

  async #commit(doc: Doc, current: ManifestState): Promise<number> {
    const bytes = encoder.encode(JSON.stringify(doc));
    const base = {
      v: 1 as const,
      tenant: doc.tenant,
      session_id: doc.session_id,
      created_at: doc.created_at,
      updated_at: doc.updated_at,
      model: doc.model,
      layers: doc.layers.length,
      bytes: bytes.length,
    };
    let manifest: Manifest;
    if (bytes.length <= CHUNK_BYTES) manifest = { ...base, body: { kind: "inline", doc } };
    else {
      const gen = `${Date.now().toString(36)}-${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
      const count = Math.ceil(bytes.length / CHUNK_BYTES);
      const token = sessionToken(doc.session_id);
      try {
        await Promise.all(
          Array.from({ length: count }, (_, i) =>
            this.kv.put(`c.${doc.tenant}.${token}.${gen}.${i}`, bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES)),
          ),
        );
      } catch (err) {
        await this.#purgeGeneration(doc.tenant, doc.session_id, gen).catch(() => {});
        throw err;
      }
      manifest = { ...base, body: { kind: "chunks", gen, count, sha256: createHash("sha256").update(bytes).digest("hex") } };
    }
    const key = SessionStore.manifestKey(doc.tenant, doc.session_id);
    const value = JSON.stringify(manifest);
    let revision: number;
    try {
      revision = current.state === "present" ? await this.kv.update(key, value, current.revision) : await this.kv.create(key, value);
    } catch (err) {
      if (manifest.body.kind === "chunks") await this.#purgeGeneration(doc.tenant, doc.session_id, manifest.body.gen).catch(() => {});
      throw err;
    }
    if (current.state === "present" && current.manifest.body.kind === "chunks") {
      // The old generation is unreachable now; a reader still on it reads the manifest again.
      await this.#purgeGeneration(doc.tenant, doc.session_id, current.manifest.body.gen).catch(() => {});
    }
    return revision;
  }

  async #readChunks(tenant: string, sessionId: string, gen: string, count: number): Promise<Uint8Array | undefined> {
    const token = sessionToken(sessionId);
    const entries = await Promise.all(Array.from({ length: count }, (_, i) => this.kv.get(`c.${tenant}.${token}.${gen}.${i}`)));
    const parts: Uint8Array[] = [];
    for (const e of entries) {
      if (e === null || e.operation !== "PUT") return undefined;
      parts.push(e.value);
    }
    const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  #purgeGeneration(tenant: string, sessionId: string, gen: string): Promise<void> {
    return this.#purgeSubject(`c.${tenant}.${sessionToken(sessionId)}.${gen}.*`);
  }

  async #purgeSubject(keyFilter: string): Promise<void> {
    await this.#jsm.streams.purge(`KV_${this.#bucket}`, { filter: `$KV.${this.#bucket}.${keyFilter}` });
  }

  /** Runs `fn` after the previous operation on the same session in this process (fewer conflicts). */
  #locked<T>(tenant: string, sessionId: string, fn: () => Promise<T>): Promise<T> {
    const key = `${tenant}/${sessionId}`;
    const prev = this.#locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.#locks.set(key, tail);
    void tail.then(() => {
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
    });
    return run;
  }
}

function manifestState(entry: KvEntry | null, what: string): ManifestState {
  if (entry === null) return { state: "missing" };
  if (entry.operation !== "PUT") return { state: "deleted", revision: entry.revision };
  const parsed = Manifest.safeParse(entry.json());
  if (!parsed.success)
    throw new BusError("internal", `Manifest of session "${what}" is invalid`, { retryable: false, cause: parsed.error });
  return { state: "present", revision: entry.revision, manifest: parsed.data };
}

function conflictOr(err: unknown, sessionId: string): unknown {
  if (!isRevisionConflict(err)) return err;
  return new BusError("conflict", `Session "${sessionId}" was changed by another writer; retry`, { retryable: true, cause: err });
}

/** Size of a document's JSON, in bytes. */
export function byteLength(doc: Doc): number {
  return encoder.encode(JSON.stringify(doc)).length;
}

/** The listing view of a document. */
export function summaryOf(doc: Doc, revision: number, bytes: number): SessionSummary {
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
