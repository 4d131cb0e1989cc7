/**
 * Tenant resolution (minimal; issue 7 hardens it). With no `ATLAS_API_KEYS` every request
 * belongs to the tenant `default`. With keys, `Authorization: Bearer <key>` names the tenant,
 * and a missing or unknown key is a 401 in OpenAI's format on every endpoint except `/health`
 * and `/ready`.
 *
 * Keys are compared by their SHA-256 digest (a map lookup on the digest leaks nothing about the
 * key's characters) and are never logged or echoed.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { ApiKeyEntry } from "@atlas/config";
import { DEFAULT_TENANT } from "@atlas/contracts";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { ApiError, ErrorType } from "./errors.ts";

declare module "fastify" {
  interface FastifyRequest {
    /** The caller's tenant: the owner of its API key, or `default` when the server runs open. */
    tenant: string;
    /** Whether the caller may act on the cluster (an `:admin` key, or any caller of an open server). */
    admin: boolean;
  }
}

/** Paths anyone may call, key or not (probes). */
export const OPEN_PATHS: ReadonlySet<string> = new Set(["/health", "/ready"]);

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
      throw new ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        { type: ErrorType.authentication, code: "invalid_api_key" },
      );
    }
    const entry = this.#byDigest.get(digest(m[1]));
    if (entry === undefined) {
      throw new ApiError(401, "Incorrect API key provided.", { type: ErrorType.authentication, code: "invalid_api_key" });
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
export async function authPlugin(app: FastifyInstance): Promise<void> {
  const resolver = new TenantResolver(app.deps.config.ATLAS_API_KEYS ?? []);
  app.decorateRequest("tenant", DEFAULT_TENANT);
  app.decorateRequest("admin", !resolver.enforcing);
  if (!resolver.enforcing) {
    app.deps.log?.warn('No ATLAS_API_KEYS: the api runs open, every request belongs to tenant "default"');
    return;
  }
  app.deps.log?.info({ keys: app.deps.config.ATLAS_API_KEYS?.length }, "API keys required on every endpoint but /health and /ready");
  app.addHook("onRequest", async (req: FastifyRequest) => {
    if (OPEN_PATHS.has(req.url.split("?")[0] ?? "")) return;
    const entry = resolver.entry(req.headers.authorization);
    req.tenant = entry?.tenant ?? DEFAULT_TENANT;
    req.admin = entry?.admin ?? false;
  });
}
// Not encapsulated: the decoration and the hook apply to the whole app.
(authPlugin as unknown as Record<symbol, boolean>)[Symbol.for("skip-override")] = true;

/** Refuses a caller that may not act on the cluster (403). */
export function requireAdmin(req: FastifyRequest): void {
  if (!req.admin) {
    throw new ApiError(403, "This operation acts on the cluster and needs an admin API key.", {
      type: ErrorType.permission,
      code: "admin_required",
    });
  }
}
