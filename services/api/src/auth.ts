/**
 * Keys and tenants (docs/security.md). With no `ATLAS_API_KEYS` every request belongs to the
 * tenant `default`, every caller may act on the cluster, and the api warns at start. With keys,
 * `Authorization: Bearer <key>` names the tenant, and a missing or unknown key is a 401 in
 * OpenAI's format on every endpoint except `/health`, `/ready` and the dashboard's static files
 * (which hold no data). Operations on the cluster need an `:admin` key ({@link requireAdmin}:
 * a 403 otherwise).
 *
 * A browser's `EventSource` cannot send headers, so the metrics stream and the dashboard page
 * — and only they — also take the key as `?access_token=<key>` (RFC 6750 §2.3). The logger cuts
 * it out of every logged URL (`@atlas/log`), and the dashboard removes it from its address bar.
 *
 * Keys are compared by their SHA-256 digest (a map lookup on the digest leaks nothing about the
 * key's characters) and are never logged or echoed. Every refusal is an audit record.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { ApiKeyEntry } from "@atlas/config";
import { DEFAULT_TENANT } from "@atlas/contracts";
import type { FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import { AuditEvent, audit } from "./audit.ts";
import { apiError } from "./errors.ts";
import { OPENAPI_PATHS } from "./openapi.ts";

/**
 * Paths anyone may call, key or not: probes, the dashboard's static files, and the OpenAPI
 * document with its page (`/docs` and everything under it); none holds data.
 */
export const OPEN_PATHS: ReadonlySet<string> = new Set([
  "/health",
  "/ready",
  OPENAPI_PATHS.document,
  "/dashboard/dashboard.js",
  "/dashboard/dashboard.css",
  "/dashboard/vendor/uPlot.iife.min.js",
  "/dashboard/vendor/uPlot.min.css",
]);

/** The only paths that take the key as `?access_token=` (for `EventSource`, which cannot send headers). */
export const TOKEN_QUERY_PATHS: ReadonlySet<string> = new Set(["/v1/atlas/metrics/stream", "/dashboard", "/dashboard/"]);

/** The key in `?access_token=` of a URL, if any. */
function queryToken(url: string): string | undefined {
  const q = url.indexOf("?");
  if (q === -1) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get("access_token") ?? undefined;
}

/** Resolves keys to tenants. */
export class TenantResolver {
  readonly #byDigest: Map<string, ApiKeyEntry>;

  constructor(keys: readonly ApiKeyEntry[]) {
    this.#byDigest = new Map(keys.map((k) => [digest(k.key), k]));
  }

  /** True when keys are configured (the server is not open). */
  get enforcing(): boolean {
    return this.#byDigest.size > 0;
  }

  /** The tenant of a request's `Authorization` header, or the 401 to answer. */
  resolve(authorization: string | undefined): string {
    return this.entry(authorization)?.tenant ?? DEFAULT_TENANT;
  }

  /** The key entry of a request's `Authorization` header (undefined on an open server), or the 401. */
  entry(authorization: string | undefined): ApiKeyEntry | undefined {
    if (!this.enforcing) return undefined;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (m?.[1] === undefined) {
      throw apiError("invalid_api_key", { missing: true });
    }
    const entry = this.#byDigest.get(digest(m[1]));
    if (entry === undefined) {
      throw apiError("invalid_api_key", { missing: false });
    }
    return entry;
  }
}

function digest(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/**
 * Decorates every request with its `tenant` and refuses unauthenticated ones. Registered on the
 * root instance (not encapsulated) before the routes, so its hook runs for every route.
 */
async function auth(app: FastifyInstance): Promise<void> {
  const resolver = new TenantResolver(app.deps.config.ATLAS_API_KEYS ?? []);
  app.decorateRequest("tenant", DEFAULT_TENANT);
  app.decorateRequest("admin", !resolver.enforcing);
  if (!resolver.enforcing) {
    app.deps.log?.warn('No ATLAS_API_KEYS: the api runs open, every request belongs to tenant "default"');
    return;
  }
  app.deps.log?.info(
    { keys: app.deps.config.ATLAS_API_KEYS?.length },
    "API keys required on every endpoint but /health, /ready and the API description",
  );
  app.addHook("onRequest", async (req: FastifyRequest) => {
    const path = req.url.split("?")[0] ?? "";
    if (OPEN_PATHS.has(path) || path === OPENAPI_PATHS.page || path.startsWith(`${OPENAPI_PATHS.page}/`)) return;
    let authorization = req.headers.authorization;
    if (authorization === undefined && TOKEN_QUERY_PATHS.has(path)) {
      const token = queryToken(req.url);
      if (token !== undefined) authorization = `Bearer ${token}`;
    }
    let entry: ApiKeyEntry | undefined;
    try {
      entry = resolver.entry(authorization);
    } catch (err) {
      audit(req, {
        event: AuditEvent.authDenied,
        outcome: "denied",
        tenant: null,
        detail: { reason: authorization === undefined ? "missing_key" : "invalid_key", path, ip: req.ip },
      });
      throw err;
    }
    req.tenant = entry?.tenant ?? DEFAULT_TENANT;
    req.admin = entry?.admin ?? false;
  });
}
/** Not encapsulated (`fastify-plugin`): the decoration and the hook apply to the whole app. */
export const authPlugin = fp(auth, { name: "atlas-auth" });

/** Refuses a caller that may not act on the cluster (403). */
export function requireAdmin(req: FastifyRequest, what = "This operation acts on the cluster"): void {
  if (!req.admin) {
    audit(req, { event: AuditEvent.authForbidden, outcome: "denied", detail: { reason: "admin_required" } });
    throw apiError("admin_required", { what });
  }
}
