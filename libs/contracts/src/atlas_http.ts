/**
 * ATLAS's own HTTP shapes, the ones beside OpenAI's: the `atlas` request extension and response
 * object, and the session-memory routes' bodies. Defined once here because two ends read them:
 * the api validates and documents its routes with them (`services/api/src/openai/schemas.ts`,
 * `openai/responses.ts`, `memory/routes.ts`), and `@atlas/client` types and parses what it sends
 * and gets (`libs/client/src/schemas.ts`). docs/api.md describes them.
 *
 * @module
 */
import { z } from "zod";
import { CacheStrategy, CacheTier } from "./cache.ts";
import { LayerId, LayerUsage, MemoryMessage, MemoryMetadata, MemorySessionId, SessionSummary } from "./memory.ts";

const count = z.number().int().nonnegative();
const ms = z.number().nonnegative();

/** `atlas.session_id`: 1–128 of `[A-Za-z0-9._:-]`, the same rule as stored sessions. */
export const SessionId = MemorySessionId;

/** The `atlas` request extension (docs/api.md, "The `atlas` extension"); unknown keys are a 400. */
export const AtlasOptions = z
  .object({
    session_id: SessionId.optional(),
    memory_layers: z.number().int().min(1).max(10).optional(),
    cache_strategy: CacheStrategy.optional(),
    batch_size: z.number().int().min(1).max(32).optional(),
  })
  .strict();
/** The `atlas` request extension. */
export type AtlasOptions = z.infer<typeof AtlasOptions>;

/** The `atlas` response object (docs/api.md, "The `atlas` extension"). */
export const AtlasResponse = z
  .object({
    version: z.string(),
    session_id: SessionId.optional(),
    memory: z.object({ layers: count.describe("The session's stored layers that are in the prompt") }).optional(),
    cache: z.object({ outcome: CacheTier, cached_tokens: count }),
    workers: z.array(z.string()),
    slots: z.array(z.object({ worker: z.string(), slot: count, fencing_token: z.number().int().positive().nullable() })),
    timings: z.object({ queue_ms: ms, ttft_ms: ms, generation_ms: ms, total_ms: ms }),
  })
  .describe("Only when the request carried `atlas`");
/** The `atlas` response object. */
export type AtlasResponse = z.infer<typeof AtlasResponse>;

// ── Session memory routes ────────────────────────────────────────────────────────────────────

/** A layer as a client sends it: `id`, `created_at` and `usage` are optional. */
export const LayerInput = z
  .object({
    id: LayerId.optional(),
    created_at: z.iso.datetime().optional(),
    messages: z.array(MemoryMessage).min(1),
    usage: LayerUsage.nullable().optional(),
  })
  .strict();
/** A layer as a client sends it. */
export type LayerInput = z.input<typeof LayerInput>;

/** A document as a client sends it to `PUT`: everything but `version` and `layers[].messages` may be left out. */
export const DocumentInput = z
  .object({
    version: z.literal(1),
    session_id: z.string().optional(),
    tenant: z.string().optional(),
    created_at: z.iso.datetime().optional(),
    updated_at: z.iso.datetime().optional(),
    model: z.string().min(1).max(256).nullable().optional(),
    layers: z.array(LayerInput).default([]),
    metadata: MemoryMetadata.default({}),
  })
  .strict();
/** A document to import (an exported session document is one). */
export type DocumentInput = z.input<typeof DocumentInput>;

/** `POST …/layers` body: a layer, and the model of the exchange. */
export const AppendInput = LayerInput.extend({ model: z.string().min(1).max(256).nullable().optional() }).strict();
/** `POST …/layers` body. */
export type AppendInput = z.input<typeof AppendInput>;

/** A session as the routes answer it: its summary (no transcript), as an object with an `id`. */
export const SessionObject = SessionSummary.extend({ object: z.literal("atlas.memory.session"), id: SessionId }).describe(
  "The session: its summary (no transcript); `ETag` is its revision",
);
/** A session as the routes answer it. */
export type SessionObject = z.infer<typeof SessionObject>;

/** `GET /v1/atlas/memory`: one page of the caller's sessions, ordered by id. */
export const SessionList = z
  .object({
    object: z.literal("list"),
    data: z.array(SessionObject),
    has_more: z.boolean(),
    first_id: SessionId.nullable(),
    last_id: SessionId.nullable().describe("`?after=` for the next page"),
  })
  .describe("One page of the caller's sessions, ordered by id");
/** `GET /v1/atlas/memory`. */
export type SessionList = z.infer<typeof SessionList>;

/** `DELETE /v1/atlas/memory/{session_id}`. */
export const DeletedSession = z
  .object({ id: SessionId, object: z.literal("atlas.memory.session.deleted"), deleted: z.literal(true) })
  .describe("Deleted: the transcript, queued appends, the mirror file and the session's KV state in every tier");
/** `DELETE /v1/atlas/memory/{session_id}`. */
export type DeletedSession = z.infer<typeof DeletedSession>;

/** `POST /v1/atlas/memory/{session_id}/layers` (202). */
export const AppendedLayer = z
  .object({
    object: z.literal("atlas.memory.layer"),
    id: LayerId,
    session_id: SessionId,
    status: z
      .enum(["stored", "queued"])
      .describe("`stored` by persistence, or `queued` in the durable fallback stream while persistence does not answer"),
  })
  .describe("The layer is durable (stored or queued); its id makes a retry safe");
/** `POST /v1/atlas/memory/{session_id}/layers`. */
export type AppendedLayer = z.infer<typeof AppendedLayer>;
