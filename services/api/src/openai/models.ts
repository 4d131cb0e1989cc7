/**
 * `GET /v1/models` and `GET /v1/models/{id}`: the models the cluster's workers serve, and the
 * aliases of `ATLAS_MODEL_ALIASES` that stand for them.
 *
 * @module
 */
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { ModelEntry } from "../catalog.ts";
import { errorResponses, Tag } from "../openapi.ts";
import { aliasesOf, resolveModel } from "./common.ts";

/** A model as OpenAI describes one, with the context length a request gets. */
const ModelObject = z.object({
  id: z.string(),
  object: z.literal("model"),
  /** The model file's modification time, in s. */
  created: z.number().int(),
  owned_by: z.string(),
  /** Tokens one request may use (prompt and completion): the context of one slot. */
  context_length: z.number().int().positive(),
  /** The served model the id runs on: itself, or the model an alias stands for. */
  root: z.string(),
});

function modelObject(m: ModelEntry, id = m.id): z.infer<typeof ModelObject> {
  return { id, object: "model", created: m.created, owned_by: "atlas", context_length: m.ctx_size, root: m.id };
}

/** Registers the model routes. */
export async function modelRoutes(app: FastifyInstance): Promise<void> {
  const list = z.object({ object: z.literal("list"), data: z.array(ModelObject) });
  app.get(
    "/v1/models",
    {
      schema: {
        tags: [Tag.openai],
        summary: "List models",
        description: "Every model a live worker serves, then the aliases of those models (`root` names the model an alias stands for).",
        response: { 200: list, ...errorResponses },
      },
    },
    async () => {
      // A listing is at most half a second old (discovery is cheap, and at most one runs at a time).
      if (app.catalog.list().length === 0 || app.catalog.ageMs > 500) await app.catalog.refresh();
      const served = app.catalog.list();
      const aliases = served.flatMap((m) => aliasesOf(app, m.id).map((alias) => modelObject(m, alias)));
      return { object: "list", data: [...served.map((m) => modelObject(m)), ...aliases.sort((a, b) => a.id.localeCompare(b.id))] };
    },
  );

  const schema = {
    tags: [Tag.openai],
    summary: "Retrieve a model",
    description:
      "A served model by id or alias (`root` names the model an alias stands for); 404 for a model the cluster does not know, 503 with `Retry-After` for one it knows whose workers are all gone for now.",
    params: z.object({ id: z.string() }),
    response: { 200: ModelObject, ...errorResponses },
  };
  app.withTypeProvider<ZodTypeProvider>().get("/v1/models/:id", { schema }, async (req) => {
    const m = await resolveModel(app, req.params.id);
    return modelObject(m, req.params.id);
  });
}
