/**
 * Everything the api adds to fastify's types, in one place: what `buildApp` decorates the app
 * with (`app.ts`, `guard.ts`) and what its hooks set on each request (`auth.ts`,
 * `metrics/recorder.ts`).
 *
 * @module
 */

import type { ModelCatalog } from "./catalog.ts";
import type { Credits } from "./credits.ts";
import type { AppDeps } from "./deps.ts";
import type { Guard } from "./guard.ts";
import type { RequestTrace } from "./metrics/recorder.ts";

declare module "fastify" {
  interface FastifyInstance {
    /** The bus, configuration and logger the app was built with. */
    deps: AppDeps;
    /** The models the cluster serves (`catalog.ts`). */
    catalog: ModelCatalog;
    /** The slot credits this api holds (`credits.ts`). */
    credits: Credits;
    /** Rate limits, admission and circuit breakers of this api (`guard.ts`). */
    guard: Guard;
  }
  interface FastifyRequest {
    /** The caller's tenant: the owner of its API key, or `default` when the server runs open (`auth.ts`). */
    tenant: string;
    /** Whether the caller may act on the cluster (an `:admin` key, or any caller of an open server). */
    admin: boolean;
    /** Set on the generation endpoints; `null` elsewhere (`metrics/recorder.ts`). */
    atlasTrace: RequestTrace | null;
  }
}
