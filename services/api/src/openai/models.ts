/**
 * `GET /v1/models` and `GET /v1/models/{id}`: the models the cluster's workers serve.
 *
 * @module
 */
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { ModelEntry } from "../catalog.ts";
import { apiError } from "../errors.ts";
import { errorResponses, Tag } from "../openapi.ts";

/** A model as OpenAI describes one. */
const ModelObject = z.object({ id: z.string(), object: z.literal("model"), created: z.number().int(), owned_by: z.string() });

function modelObject(m: ModelEntry): z.infer<typeof ModelObject> {
  return { id: m.id, object: "model", created: m.created, owned_by: "atlas" };
}

/** Registers the model routes. */
export async function modelRoutes(app: FastifyInstance): Promise<void> {
  const list = z.object({ object: z.literal("list"), data: z.array(ModelObject) });
  app.get(
    "/v1/models",
    { schema: { tags: [Tag.openai], summary: "List models", response: { 200: list, ...errorResponses } } },
    async () => {
      // A listing is at most half a second old (discovery is cheap, and at most one runs at a time).
      if (app.catalog.list().length === 0 || app.catalog.ageMs > 500) await app.catalog.refresh();
      return { object: "list", data: app.catalog.list().map(modelObject) };
    },
  );

  const schema = {
    tags: [Tag.openai],
    summary: "Retrieve a model",
    params: z.object({ id: z.string() }),
    response: { 200: ModelObject, ...errorResponses },
  };
  app.withTypeProvider<ZodTypeProvider>().get("/v1/models/:id", { schema }, async (req) => {
    const m = await app.catalog.get(req.params.id);
    if (m === undefined) {
      throw apiError("model_not_found", { model: req.params.id }, { param: "model" });
    }
    return modelObject(m);
  });
}
