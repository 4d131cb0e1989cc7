/**
 * Session memory's data: the session document (format version 1), its layers and messages, the
 * ids and names they are stored under, the claim check's reference, and the token rule the api
 * and persistence share to fit layers into a prompt. The messages that carry them are in
 * `memory_rpc.ts`. See `docs/memory.md` and `docs/adr/0005-session-memory-storage.md`.
 *
 * @module
 */
import { z } from "zod";
import { ToolMessageFields } from "./tools.ts";

/** The session document format this code reads and writes. */
export const MEMORY_FORMAT_VERSION = 1;

/** Encoded JSON larger than this travels by reference through the transfer object store. */
export const MEMORY_INLINE_BYTES = 256 * 1024;

/** A session id: 1–128 of `[A-Za-z0-9._:-]`. */
export const MemorySessionId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/, "must be 1-128 characters of [A-Za-z0-9._:-]");

/** A tenant (the owner of an API key; `default` when the server runs without keys). */
export const TenantId = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "must be 1-64 characters of [A-Za-z0-9_-]");

/** The tenant of every request when no API keys are configured. */
export const DEFAULT_TENANT = "default";

/** A layer id: assigned by the api (request id) or by the client; unique within a session. */
export const LayerId = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._:~-]+$/, "must be 1-200 characters of [A-Za-z0-9._:~-]");

/** One stored chat message. */
export const MemoryMessage = z
  .object({
    role: z.enum(["system", "developer", "user", "assistant", "tool"]),
    content: z.string(),
    ...ToolMessageFields,
  })
  .strict();
/** One stored chat message. */
export type MemoryMessage = z.infer<typeof MemoryMessage>;

/** Token counts of the exchange that made a layer (null when unknown, e.g. a hand-made import). */
export const LayerUsage = z
  .object({
    prompt_tokens: z.number().int().nonnegative(),
    completion_tokens: z.number().int().nonnegative(),
    total_tokens: z.number().int().nonnegative(),
  })
  .strict();
/** Token counts of the exchange that made a layer. */
export type LayerUsage = z.infer<typeof LayerUsage>;

/** One exchange: the request's new messages plus the assistant's reply. */
export const MemoryLayer = z
  .object({
    id: LayerId,
    created_at: z.iso.datetime(),
    messages: z.array(MemoryMessage).min(1),
    usage: LayerUsage.nullable(),
  })
  .strict();
/** One exchange. */
export type MemoryLayer = z.infer<typeof MemoryLayer>;

/** JSON values a document's `metadata` may hold. */
export const MemoryMetadata = z.record(z.string().max(256), z.unknown());

/** The session document, format version 1 (docs/memory.md). */
export const SessionDocument = z
  .object({
    version: z.literal(MEMORY_FORMAT_VERSION),
    session_id: MemorySessionId,
    tenant: TenantId,
    created_at: z.iso.datetime(),
    updated_at: z.iso.datetime(),
    /** Model of the latest exchange; null for a document that never met a model. */
    model: z.string().min(1).max(256).nullable(),
    layers: z.array(MemoryLayer),
    metadata: MemoryMetadata,
  })
  .strict()
  .superRefine((doc, ctx) => {
    const seen = new Set<string>();
    doc.layers.forEach((layer, i) => {
      if (seen.has(layer.id)) ctx.addIssue({ code: "custom", path: ["layers", i, "id"], message: `duplicates layer id "${layer.id}"` });
      seen.add(layer.id);
    });
  });
/** The session document, format version 1. */
export type SessionDocument = z.infer<typeof SessionDocument>;

/** A session as a listing shows it (no transcript). */
export const SessionSummary = z.object({
  session_id: MemorySessionId,
  created_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
  model: z.string().nullable(),
  layers: z.number().int().nonnegative(),
  /** Size of the document's JSON, in bytes. */
  bytes: z.number().int().nonnegative(),
  /** Revision of the stored document (changes on every write). */
  revision: z.number().int().positive(),
});
/** A session as a listing shows it. */
export type SessionSummary = z.infer<typeof SessionSummary>;

/** A payload parked in the transfer object store (claim check). */
export const PayloadRef = z.object({
  /** Object name in the transfer store. */
  name: z.string().min(1).max(200),
  bytes: z.number().int().nonnegative(),
});
/** A payload parked in the transfer object store. */
export type PayloadRef = z.infer<typeof PayloadRef>;

/** JetStream names of session memory under one prefix. */
export interface MemoryNames {
  /** KV bucket: chunks of large log records, and (format 1) whole documents awaiting migration. */
  kv: string;
  /** Stream of session logs: one subject per session, one message per layer. */
  log: string;
  /** Stream of appends (work queue). */
  stream: string;
  /** Durable consumer of the append stream that persistence reads. */
  consumer: string;
  /** Object store for payloads larger than {@link MEMORY_INLINE_BYTES}. */
  transfer: string;
}

/** Bucket, stream and consumer names for a subject prefix (dots become `_`). */
export function memoryNames(prefix: string): MemoryNames {
  const p = prefix.replaceAll(".", "_");
  return { kv: `${p}_memory`, log: `${p}_memory_log`, stream: `${p}_memory_append`, consumer: "persistence", transfer: `${p}_memory_xfer` };
}

/**
 * A session id as one subject or KV-key token: base64url without padding (ids may hold `.`
 * and `:`, which subjects and keys cannot).
 */
export function sessionToken(sessionId: string): string {
  return btoa(sessionId).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The inverse of {@link sessionToken}; throws on a token that is not one. */
export function sessionFromToken(token: string): string {
  const b64 = token.replaceAll("-", "+").replaceAll("_", "/");
  return atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
}

/** Conservative token estimate of some messages: UTF-8 bytes ÷ 2 (rounded up) plus 8 per message (role markers). */
export function estimateTokens(messages: readonly { content: string }[]): number {
  return messages.reduce((s, m) => s + Math.ceil(Buffer.byteLength(m.content) / 2) + 8, 0);
}

/** The newest layers that fit `budgetTokens` (oldest dropped first), at most `maxLayers` of them. */
export function fitLayers<L extends { messages: readonly { content: string }[] }>(
  layers: readonly L[],
  budgetTokens: number,
  maxLayers?: number,
): L[] {
  const from = maxLayers === undefined ? 0 : Math.max(0, layers.length - maxLayers);
  const out: L[] = [];
  let used = 0;
  for (let i = layers.length - 1; i >= from; i--) {
    const layer = layers[i] as L;
    used += estimateTokens(layer.messages);
    if (used > budgetTokens) break;
    out.unshift(layer);
  }
  return out;
}
