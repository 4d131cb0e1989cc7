/**
 * Session memory over HTTP, scoped to the caller's tenant:
 *
 * - `GET /v1/atlas/memory?limit=&after=`: the caller's sessions, ordered by id, paginated;
 * - `GET /v1/atlas/memory/{session_id}`: the document (format version 1), `ETag` = revision;
 * - `PUT /v1/atlas/memory/{session_id}`: import or replace (validated; `If-Match` optional);
 * - `DELETE /v1/atlas/memory/{session_id}`: the transcript, queued appends, the mirror file, and
 *   (through the `memory.deleted` event) the session's KV state in every tier;
 * - `POST /v1/atlas/memory/{session_id}/layers`: append one layer (stored by persistence, or
 *   queued in the durable fallback stream while persistence does not answer).
 *
 * The success objects are zod schemas here ({@link SessionObject}, {@link SessionList},
 * {@link DeletedSession}, {@link AppendedLayer}; a read answers the contract's `SessionDocument`),
 * in the OpenAPI document and typing the replies. Path parameters and query strings are validated
 * by the route schemas (`openapi.ts`): a malformed session id in the URL is a 400
 * `Invalid session_id "<id>": …` with `param: "session_id"`, as `?limit=`/`?tenant=` name theirs.
 *
 * Another tenant's session is a 404 exactly like a missing one. An admin key may act on another
 * tenant's sessions with `?tenant=<tenant>`; any other key naming a tenant not its own gets a 403.
 * Persistence out of reach (or its circuit breaker open) is a 503 with `Retry-After`. Every
 * read, list, import (PUT), write (append) and delete is an audit record. With `ATLAS_ENABLED=0`
 * these routes do not exist.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import {
  AppendedLayer,
  AppendInput,
  DeletedSession,
  DocumentInput,
  MEMORY_LIST_MAX,
  SessionDocument,
  SessionList,
  SessionObject,
  type SessionSummary,
  TenantId,
} from "@atlas/contracts";
import type { FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { AuditEvent, type AuditEvent as AuditEventName, audit } from "../audit.ts";
import { requireAdmin } from "../auth.ts";
import { type ApiError, apiError, fromBus, fromZod } from "../errors.ts";
import { SessionId } from "../openai/schemas.ts";
import { errorResponses, Tag } from "../openapi.ts";
import { memoryClient } from "./client.ts";

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(MEMORY_LIST_MAX).default(20),
  after: SessionId.optional(),
  tenant: TenantId.optional(),
});

const TenantQuery = z.object({ tenant: TenantId.optional() });

/** The session of a memory URL. */
const SessionParams = z.object({ session_id: SessionId });

// The bodies are shared with `@atlas/client` (libs/contracts/src/atlas_http.ts).
export { AppendedLayer, DeletedSession, SessionList, SessionObject };

/** An operation's tag, summary and success responses (status → schema) in the OpenAPI document. */
const doc = <R extends Record<number, z.ZodType>>(summary: string, success: R) => ({
  tags: [Tag.memory],
  summary,
  response: { ...success, ...errorResponses },
});

const RETRY_AFTER_S = 2;

/** Registers the memory routes (not encapsulated, so the app's hooks and error handler apply). */
async function routes(app: FastifyInstance): Promise<void> {
  if (!app.deps.config.ATLAS_ENABLED) return;
  const client = memoryClient(app);
  app.addHook("onClose", async () => client.close());
  const typed = app.withTypeProvider<ZodTypeProvider>();

  typed.get("/v1/atlas/memory", { schema: { ...doc("List sessions", { 200: SessionList }), querystring: ListQuery } }, async (req) => {
    const q = req.query;
    const tenant = ownerOf(req, q.tenant);
    const page = await call(req, { event: AuditEvent.memoryList, tenant }, () =>
      client.list(tenant, { limit: q.limit, after: q.after }, { requestId: req.id }),
    );
    const list: SessionList = {
      object: "list",
      data: page.data.map(sessionObject),
      has_more: page.has_more,
      first_id: page.data[0]?.session_id ?? null,
      last_id: page.data.at(-1)?.session_id ?? null,
    };
    return list;
  });

  typed.get(
    "/v1/atlas/memory/:session_id",
    {
      schema: {
        ...doc("Read a session", {
          200: SessionDocument.describe("The session document, format version 1 (docs/memory.md); `ETag` is its revision"),
        }),
        params: SessionParams,
        querystring: TenantQuery,
      },
    },
    async (req, reply) => {
      const sessionId = req.params.session_id;
      const tenant = ownerOf(req, req.query.tenant);
      await client.settled(tenant, sessionId); // read your writes: this api's appends still in flight go first
      const r = await call(req, { event: AuditEvent.memoryRead, tenant, session: sessionId }, () =>
        client.get(tenant, sessionId, { requestId: req.id }),
      );
      void reply.header("etag", `"${r.revision}"`);
      return r.doc;
    },
  );

  typed.put(
    "/v1/atlas/memory/:session_id",
    {
      schema: {
        ...doc("Import or replace a session (201 when new; `If-Match` optional, `ETag`: the new revision)", {
          200: SessionObject,
          201: SessionObject,
        }),
        params: SessionParams,
        querystring: TenantQuery,
        body: DocumentInput,
      },
    },
    async (req, reply) => {
      const sessionId = req.params.session_id;
      const tenant = ownerOf(req, req.query.tenant);
      const input = req.body;
      if (input.session_id !== undefined && input.session_id !== sessionId) {
        const message = `Invalid request at 'session_id': "${input.session_id}" is not the session of the URL ("${sessionId}")`;
        throw apiError("invalid_value", { message }, { param: "session_id" });
      }
      if (input.tenant !== undefined && input.tenant !== tenant) {
        const message = `Invalid request at 'tenant': "${input.tenant}" is not the tenant of your API key`;
        throw apiError("invalid_value", { message }, { param: "tenant" });
      }
      const now = new Date().toISOString();
      const doc = SessionDocument.safeParse({
        version: 1,
        session_id: sessionId,
        tenant: TenantId.parse(tenant),
        created_at: input.created_at ?? now,
        updated_at: input.updated_at ?? now,
        model: input.model ?? null,
        layers: input.layers.map((l, i) => ({
          id: l.id ?? `layer-${i + 1}`,
          created_at: l.created_at ?? now,
          messages: l.messages,
          usage: l.usage ?? null,
        })),
        metadata: input.metadata,
      });
      if (!doc.success) throw fromZod(doc.error);
      const ifRevision = ifMatch(req);
      const r = await call(
        req,
        { event: AuditEvent.memoryImport, tenant, session: sessionId, detail: { layers: doc.data.layers.length } },
        () => client.put(doc.data, { requestId: req.id, ...(ifRevision === undefined ? {} : { ifRevision }) }),
      );
      void reply.code(r.created ? 201 : 200).header("etag", `"${r.session.revision}"`);
      return sessionObject(r.session);
    },
  );

  typed.delete(
    "/v1/atlas/memory/:session_id",
    { schema: { ...doc("Delete a session", { 200: DeletedSession }), params: SessionParams, querystring: TenantQuery } },
    async (req) => {
      const sessionId = req.params.session_id;
      const tenant = ownerOf(req, req.query.tenant);
      await call(req, { event: AuditEvent.memoryDelete, tenant, session: sessionId }, () =>
        client.delete(tenant, sessionId, { requestId: req.id }),
      );
      const deleted: DeletedSession = { id: sessionId, object: "atlas.memory.session.deleted", deleted: true };
      return deleted;
    },
  );

  typed.post(
    "/v1/atlas/memory/:session_id/layers",
    {
      schema: {
        ...doc("Append a layer (202 once it is durable)", { 202: AppendedLayer }),
        params: SessionParams,
        querystring: TenantQuery,
        body: AppendInput,
      },
    },
    async (req, reply) => {
      const sessionId = req.params.session_id;
      const tenant = ownerOf(req, req.query.tenant);
      const input = req.body;
      const id = input.id ?? `layer_${crypto.randomUUID().replaceAll("-", "")}`;
      const append = client.append({
        tenant,
        sessionId,
        model: input.model ?? null,
        layer: { id, created_at: input.created_at ?? new Date().toISOString(), messages: input.messages, usage: input.usage ?? null },
      });
      // Answer once it is durable — stored by persistence, or held by JetStream for it — or 503
      // when neither can take it now; the append keeps retrying in the background either way, and
      // the layer id makes a client retry safe.
      let timer: NodeJS.Timeout | undefined;
      const how = await Promise.race([
        append,
        new Promise<undefined>((r) => {
          timer = setTimeout(() => r(undefined), 8000);
        }),
      ]).catch(() => undefined);
      clearTimeout(timer);
      const written = { event: AuditEvent.memoryWrite, tenant, session: sessionId, detail: { layer: id } };
      if (how === undefined) {
        audit(req, { ...written, outcome: "unavailable" });
        throw unavailable();
      }
      audit(req, { ...written, outcome: "ok", detail: { layer: id, via: how } });
      void reply.code(202);
      const appended: AppendedLayer = { object: "atlas.memory.layer", id, session_id: sessionId, status: how };
      return appended;
    },
  );
}
/** Not encapsulated (`fastify-plugin`): routes share the root's error handler, and `memoryClient(app)` is one per app. */
export const memoryRoutes = fp(routes, { name: "atlas-memory-routes" });

/**
 * Whose sessions a request acts on: the caller's own, or — for an admin key only — the tenant in
 * `?tenant=` (validated by the route's query schema). Another key naming a tenant not its own gets a 403.
 */
function ownerOf(req: FastifyRequest, tenant: string | undefined): string {
  if (tenant === undefined || tenant === req.tenant) return req.tenant;
  requireAdmin(req, "Acting on another tenant's sessions");
  return tenant;
}

function ifMatch(req: FastifyRequest): number | undefined {
  const h = req.headers["if-match"];
  if (h === undefined) return undefined;
  const m = /^\s*(?:W\/)?"?(\d+)"?\s*$/.exec(String(h));
  if (m?.[1] === undefined) {
    throw apiError(
      "invalid_value",
      { message: `If-Match must be a revision such as "12", not ${JSON.stringify(h)}` },
      { param: "If-Match" },
    );
  }
  return Number(m[1]);
}

function sessionObject(s: SessionSummary): SessionObject {
  return { object: "atlas.memory.session", id: s.session_id, ...s };
}

function unavailable(cause?: BusError): ApiError {
  return apiError("memory_unavailable", undefined, { retryAfterS: Math.max(RETRY_AFTER_S, cause?.retryAfterS ?? 0), cause });
}

/** What a persistence call is, for its audit record. */
interface Audited {
  event: AuditEventName;
  tenant: string;
  session?: string;
  detail?: Record<string, string | number | boolean | null>;
}

/** Runs a persistence call, writes its audit record, and maps its failure to the HTTP error (never a 5xx crash). */
async function call<T>(req: FastifyRequest, what: Audited, fn: () => Promise<T>): Promise<T> {
  const record = (outcome: string) => audit(req, { ...what, session: what.session ?? null, outcome });
  const sessionId = what.session;
  try {
    const v = await fn();
    record("ok");
    return v;
  } catch (err) {
    if (!(err instanceof BusError)) {
      record("error");
      throw err;
    }
    record(err.code === "bad_request" ? "invalid" : err.code === "timeout" || err.code === "overloaded" ? "unavailable" : err.code);
    switch (err.code) {
      case "not_found":
        // The same answer for a missing session and another tenant's: nothing leaks.
        throw apiError("session_not_found", { session: sessionId ?? "" }, { param: "session_id", cause: err });
      case "unavailable":
      case "timeout":
      case "overloaded":
        req.log.warn({ err: err.message, requestId: req.id }, "Session memory is unreachable");
        throw unavailable(err);
      case "conflict":
        if (req.headers["if-match"] !== undefined) {
          throw apiError("revision_mismatch", { message: `${err.message}.` }, { param: "If-Match", cause: err });
        }
        throw apiError("conflict", { message: `${err.message}.` }, { cause: err });
      default:
        throw fromBus(err, req.id);
    }
  }
}
