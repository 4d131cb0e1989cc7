/**
 * Session memory over HTTP (docs/memory.md): list, read (export), import or replace, append a
 * layer, delete. Every answer is parsed with its schema (`schemas.ts`); a failure is an
 * {@link AtlasError} (`session_not_found` 404, `revision_mismatch` 412, `memory_unavailable` 503…).
 *
 * @module
 */

import type { CallOptions, Transport } from "./http.ts";
import {
  AppendedLayer,
  type AppendInput,
  DeletedSession,
  type DocumentInput,
  SessionDocument,
  SessionList,
  SessionObject,
} from "./schemas.ts";

/** Another tenant's sessions (admin keys only; any other key gets a 403 `admin_required`). */
export interface TenantOption extends CallOptions {
  tenant?: string | undefined;
}

/** `list()`'s page. */
export interface ListOptions extends TenantOption {
  /** 1–100 sessions (default 20). */
  limit?: number | undefined;
  /** The `last_id` of the previous page. */
  after?: string | undefined;
}

/** A session document with its revision (the `ETag`), for a later `put(…, { ifRevision })`. */
export interface RevisedDocument {
  document: SessionDocument;
  revision: number;
}

/** What `put()` did. */
export interface PutResult {
  session: SessionObject;
  /** True when the session did not exist before (201). */
  created: boolean;
}

/** `put()` options. */
export interface PutOptions extends TenantOption {
  /** Only replace the session at this revision (`If-Match`); otherwise a 412 `revision_mismatch`. */
  ifRevision?: number | undefined;
}

const path = (sessionId: string) => `/v1/atlas/memory/${encodeURIComponent(sessionId)}`;

/** `client.memory`. */
export class MemoryApi {
  readonly #http: Transport;

  constructor(http: Transport) {
    this.#http = http;
  }

  /** One page of sessions, ordered by id. */
  async list(options: ListOptions = {}): Promise<SessionList> {
    const query = { limit: options.limit, after: options.after, tenant: options.tenant };
    return (await this.#http.json(SessionList, { ...options, method: "GET", path: "/v1/atlas/memory", query })).data;
  }

  /** Every session, page after page. */
  async *listAll(options: Omit<ListOptions, "after"> = {}): AsyncGenerator<SessionObject> {
    let after: string | undefined;
    for (;;) {
      const page = await this.list({ ...options, after });
      yield* page.data;
      if (!page.has_more || page.last_id === null) return;
      after = page.last_id;
    }
  }

  /** A session's document (format version 1) and its revision. */
  async get(sessionId: string, options: TenantOption = {}): Promise<RevisedDocument> {
    const { data, response } = await this.#http.json(SessionDocument, {
      ...options,
      method: "GET",
      path: path(sessionId),
      query: { tenant: options.tenant },
    });
    return { document: data, revision: revisionOf(response) };
  }

  /** The session's document, as a backup or for `import()` elsewhere. */
  async export(sessionId: string, options: TenantOption = {}): Promise<SessionDocument> {
    return (await this.get(sessionId, options)).document;
  }

  /** Imports or replaces a session (`PUT`): the whole document, validated by the server. */
  async put(sessionId: string, document: DocumentInput, options: PutOptions = {}): Promise<PutResult> {
    const headers = { ...options.headers, ...(options.ifRevision === undefined ? {} : { "if-match": `"${options.ifRevision}"` }) };
    const { data, response } = await this.#http.json(SessionObject, {
      ...options,
      headers,
      method: "PUT",
      path: path(sessionId),
      query: { tenant: options.tenant },
      body: document,
    });
    return { session: data, created: response.status === 201 };
  }

  /** `put()` of an exported document (its `session_id` must be `sessionId`, its tenant the key's). */
  async import(sessionId: string, document: DocumentInput, options: PutOptions = {}): Promise<PutResult> {
    return this.put(sessionId, document, options);
  }

  /**
   * Appends one layer (an exchange). Resolves once it is durable: `stored`, or `queued` while
   * persistence is out. A retry with the same `layer.id` is safe.
   */
  async append(sessionId: string, layer: AppendInput, options: TenantOption = {}): Promise<AppendedLayer> {
    const req = { ...options, method: "POST" as const, path: `${path(sessionId)}/layers`, query: { tenant: options.tenant }, body: layer };
    return (await this.#http.json(AppendedLayer, req)).data;
  }

  /** Deletes the session: its transcript, queued appends and its KV state in every tier. */
  async delete(sessionId: string, options: TenantOption = {}): Promise<DeletedSession> {
    return (
      await this.#http.json(DeletedSession, { ...options, method: "DELETE", path: path(sessionId), query: { tenant: options.tenant } })
    ).data;
  }
}

/** The revision in an `ETag` (`"12"`). */
function revisionOf(res: Response): number {
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(res.headers.get("etag") ?? "");
  return m?.[1] === undefined ? 0 : Number(m[1]);
}
