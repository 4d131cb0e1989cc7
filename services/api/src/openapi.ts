/**
 * The route schemas and the OpenAPI document (docs/api.md, "OpenAPI").
 *
 * Routes declare their schemas with zod (`schema: { body, querystring, params, response }`: the
 * contracts and the modules next to each route, typed through `fastify-type-provider-zod`'s type
 * provider). From them:
 * - **`GET /openapi.json`**: an OpenAPI 3.1 document (`@fastify/swagger`, the zod schemas
 *   turned into JSON Schema by the type provider's transform: requests on the input side, defaults
 *   optional; responses on the output side);
 * - **`GET /docs`**: Swagger UI rendering it (`@fastify/swagger-ui`, assets served from its
 *   package: nothing is fetched from the internet);
 * - **requests are validated** by their schemas before the handler, with zod ({@link zodValidator}):
 *   path parameters, then the body, then the query string; the handler gets the parsed values
 *   (defaults filled, `?limit=` a number). A failure reaches the error handler as an `ApiError`
 *   or the `ZodError` itself, so the client gets the same OpenAI-format 400 as anywhere: a body or
 *   query field through `fromZod` (`Invalid request at 'limit': …`, `param` the first failing
 *   field), a path parameter as `Invalid session_id "<value>": …` with `param` its name, a body
 *   that is not a JSON object an `invalid_json`. It runs after authentication (`onRequest`) and
 *   before the `preHandler` hooks (rate limits): a malformed request costs no rate.
 * - **success responses** are described where the reply is built: OpenAI's objects and stream
 *   chunks in `openai/responses.ts` (a completion is `application/json`, or `text/event-stream`
 *   with `stream: true`: {@link jsonOrEventStream}), the models in `openai/models.ts`, the session
 *   memory objects in `memory/routes.ts`; the builders are typed with the schemas' `z.infer`.
 *   Errors: {@link errorResponses}. Probes, status, drain and metrics have no success schema.
 *
 * Replies are not serialized by schema: fastify's default `JSON.stringify`, as before; the
 * response schemas are documentation and types, never a filter on what is sent.
 *
 * @module
 */

import { ATLAS_VERSION } from "@atlas/contracts";
import fastifySwagger from "@fastify/swagger";
import fastifySwaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance, FastifySchemaCompiler } from "fastify";
import fp from "fastify-plugin";
import { createJsonSchemaTransform } from "fastify-type-provider-zod";
import { type ZodError, type ZodType, z } from "zod";
import { API_ERRORS, type ApiErrorCode, ErrorType } from "./error_codes.ts";
import { apiError } from "./errors.ts";

/** Where the document and its page are served (open: no key needed, they hold no data). */
export const OPENAPI_PATHS = { document: "/openapi.json", page: "/docs" } as const;

/** OpenAI's error body, as every error is answered (`errors.ts`); `code` is one of the registry's. */
export const ErrorResponse = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.enum(Object.values(ErrorType) as [ErrorType, ...ErrorType[]]),
      param: z.string().nullable(),
      code: z.enum(Object.keys(API_ERRORS) as [ApiErrorCode, ...ApiErrorCode[]]),
    }),
  })
  .describe("OpenAI's error format; the codes are listed in docs/api.md");

/** The error responses every operation may answer, for a route's `schema.response`. */
export const errorResponses = { "4XX": ErrorResponse, "5XX": ErrorResponse } as const;

/**
 * A 200 that is a JSON object, or with `stream: true` Server-Sent Events whose every `data` is a
 * chunk (then `data: [DONE]`; OpenAI's own document describes its streams the same way), with
 * the error responses.
 */
export function jsonOrEventStream<O extends ZodType, C extends ZodType>(object: O, chunk: C, description: string) {
  return {
    200: { description, content: { "application/json": { schema: object }, "text/event-stream": { schema: chunk } } },
    ...errorResponses,
  } as const;
}

/** Tags that group the operations in the document. */
export const Tag = {
  openai: "OpenAI",
  memory: "Session memory",
  cluster: "Cluster",
  metrics: "Metrics",
  probes: "Probes",
} as const;

/**
 * Validates a route's path parameters, body and query string with their zod schemas (and
 * replaces them with the parsed values). A body that is not an object: `invalid_json`; a path
 * parameter: `Invalid <name> "<value>": <why>`, naming it; otherwise the `ZodError`, which
 * `toApiError` turns into OpenAI's 400 naming the field. Never throws (a throw would be a 500).
 */
export const zodValidator: FastifySchemaCompiler<ZodType> =
  ({ schema, httpPart }) =>
  (data) => {
    switch (httpPart) {
      case "body": {
        if (typeof data !== "object" || data === null || Array.isArray(data))
          return { error: apiError("invalid_json", { notObject: true }) };
        const r = schema.safeParse(data);
        return r.success ? { value: r.data } : { error: r.error };
      }
      case "params": {
        const r = schema.safeParse(data);
        return r.success ? { value: r.data } : { error: pathParamError(r.error, data) };
      }
      case "querystring": {
        const r = schema.safeParse(data ?? {});
        return r.success ? { value: r.data } : { error: r.error };
      }
      default:
        return { value: data };
    }
  };

/** A path parameter that fails its schema, quoted (the URL's own, decoded) and named. */
function pathParamError(err: ZodError, params: unknown): Error {
  const issue = err.issues[0];
  const name = issue?.path[0];
  if (typeof name !== "string") return err;
  const raw = (params as Record<string, unknown> | null)?.[name];
  const shown = typeof raw === "string" ? raw : JSON.stringify(raw);
  const message = `Invalid ${name} "${String(shown).slice(0, 140)}": ${issue?.message}`;
  return apiError("invalid_value", { message }, { param: name, cause: err });
}

async function openapi(app: FastifyInstance): Promise<void> {
  app.setValidatorCompiler(zodValidator);
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  await app.register(fastifySwagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "ATLAS",
        version: ATLAS_VERSION,
        description:
          "OpenAI-compatible chat and completions on llama.cpp workers, with session memory (`atlas` options), cluster status and metrics. Errors have OpenAI's shape; the codes are listed in docs/api.md.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "An API key (ATLAS_API_KEYS)" } } },
      security: [{ bearer: [] }],
      tags: Object.values(Tag).map((name) => ({ name })),
    },
    transform: createJsonSchemaTransform({ skipList: [OPENAPI_PATHS.document] }),
  });
  await app.register(fastifySwaggerUi, { routePrefix: OPENAPI_PATHS.page });
  app.get(OPENAPI_PATHS.document, { schema: { hide: true } }, async () => app.swagger());
}

/** The plugin: before the routes (it collects them as they are added), not encapsulated. */
export const openapiPlugin = fp(openapi, { name: "atlas-openapi" });
