/**
 * The route schemas and the OpenAPI document (docs/api.md, "OpenAPI").
 *
 * Routes declare their schemas with the zod contracts (`schema: { body, querystring, params }`,
 * typed through `fastify-type-provider-zod`'s type provider). From them:
 * - **`GET /openapi.json`**: an OpenAPI 3.1 document (`@fastify/swagger`, the zod schemas
 *   turned into JSON Schema by the type provider's transform, input side: defaults optional);
 * - **`GET /docs`**: Swagger UI rendering it (`@fastify/swagger-ui`, assets served from its
 *   package: nothing is fetched from the internet);
 * - **bodies are validated** by their schema before the handler, with zod ({@link zodValidator}):
 *   a failure reaches the error handler as the `ZodError` itself, so the client gets the same
 *   OpenAI-format 400 as anywhere (`fromZod`: `param` names the first failing field), and a body
 *   that is not a JSON object an `invalid_json`. Query strings and path parameters are described
 *   here but validated by their handlers, whose messages name them (`Invalid session_id …`).
 *
 * Replies are not serialized by schema: fastify's default `JSON.stringify`, as before.
 *
 * @module
 */

import { ATLAS_VERSION } from "@atlas/contracts";
import fastifySwagger from "@fastify/swagger";
import fastifySwaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance, FastifySchemaCompiler } from "fastify";
import fp from "fastify-plugin";
import { createJsonSchemaTransform } from "fastify-type-provider-zod";
import { type ZodType, z } from "zod";
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
 * A success whose shape is documented in docs/api.md rather than by a schema here (OpenAI's
 * completion objects and streams, the memory objects): with the error responses, for routes
 * that declare no success schema of their own.
 */
export const documentedResponses = {
  "2XX": z.unknown().describe("See docs/api.md for the object"),
  ...errorResponses,
} as const;

/** Tags that group the operations in the document. */
export const Tag = {
  openai: "OpenAI",
  memory: "Session memory",
  cluster: "Cluster",
  metrics: "Metrics",
  probes: "Probes",
} as const;

/**
 * Validates a route's body with its zod schema (other parts pass through to their handlers).
 * Not an object: `invalid_json`; a zod failure: the `ZodError`, which `toApiError` turns into
 * OpenAI's 400 naming the field.
 */
export const zodValidator: FastifySchemaCompiler<ZodType> =
  ({ schema, httpPart }) =>
  (data) => {
    if (httpPart !== "body") return { value: data };
    if (typeof data !== "object" || data === null || Array.isArray(data)) return { error: apiError("invalid_json", { notObject: true }) };
    const r = schema.safeParse(data);
    return r.success ? { value: r.data } : { error: r.error };
  };

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
