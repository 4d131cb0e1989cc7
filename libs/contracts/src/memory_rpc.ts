/**
 * Session memory's messages: the persistence service's mailbox, the session log it stores
 * layers in, the fallback append stream, and the deleted event (the data they carry is in
 * `memory.ts`).
 *
 * | message | sender | handler |
 * |---|---|---|
 * | `MemoryRecall`, `MemoryAddLayer` (a chat turn) | `services/api/src/memory/client.ts` | `services/persistence/src/handlers.ts` |
 * | `MemoryGet`, `MemoryList`, `MemoryPut`, `MemoryDelete` | `services/api/src/memory/client.ts` | `services/persistence/src/handlers.ts` |
 * | `MemoryAppend` (JetStream; only when `MemoryAddLayer` gets no answer) | `services/api/src/memory/fallback.ts` | `services/persistence/src/appends.ts` |
 * | `MemoryLog` (JetStream, persistence's own storage) | persistence | persistence (every instance listens) |
 * | `MemoryStale` | persistence; the api when an append's record was refused | persistence (drops a cached session) |
 * | `MemoryDeleted` | persistence | the scheduler (drops the session's KV state in every tier) |
 *
 * Payloads larger than {@link MEMORY_INLINE_BYTES} travel by reference (claim check): the sender
 * puts the JSON in the transfer object store ({@link memoryNames}`.transfer`) and sends a
 * {@link PayloadRef}; the receiver reads it, validates it and deletes the object.
 * See `docs/memory.md` and `docs/adr/0005-session-memory-storage.md`.
 *
 * @module
 */
import { z } from "zod";
import { defineEvent, defineJetStream, defineRpc } from "./define.ts";
import { JetStreamPubReply } from "./jetstream.ts";
import {
  estimateTokens,
  fitLayers,
  LayerId,
  MEMORY_INLINE_BYTES,
  MemoryLayer,
  MemoryMessage,
  MemorySessionId,
  memoryNames,
  PayloadRef,
  SessionDocument,
  SessionSummary,
  sessionToken,
  TenantId,
} from "./memory.ts";
import { sessionKey } from "./scheduler.ts";
import { subject } from "./subjects.ts";

/** Tenant and session, as every memory request names them. */
const Scope = { tenant: TenantId, session_id: MemorySessionId };

/**
 * The caller's X25519 public key (raw, base64url): a reply too large to travel inline is parked
 * in the transfer store sealed to it, when session memory is encrypted at rest (`@atlas/sealed`'s
 * `transit.ts`). The api sends it only once persistence has published its transit key (a
 * persistence that knows the field).
 */
const ReplyKey = {
  reply_key: z
    .string()
    .regex(/^[A-Za-z0-9_-]{43}$/)
    .optional(),
};

/** `memory.get` request: the document, optionally only its newest layers. */
export const MemoryGetRequest = z
  .object({
    ...Scope,
    /** Keep only the newest `tail_layers` layers. */
    tail_layers: z.number().int().positive().optional(),
    /** Keep only the newest layers whose message text totals at most this many bytes. */
    tail_bytes: z.number().int().nonnegative().optional(),
    /** Wait up to this many ms for appends of this session still queued in the stream (read your writes). */
    settle_ms: z.number().int().min(0).max(10_000).default(1000),
    ...ReplyKey,
  })
  .strict();

/** A document inline, or by reference when large. */
const DocumentPayload = {
  document: SessionDocument.optional(),
  ref: PayloadRef.optional(),
};

/** `memory.get` reply. */
export const MemoryGetResponse = z
  .object({
    ...DocumentPayload,
    revision: z.number().int().positive(),
    /** Layers in the stored document (the reply may hold fewer when a tail was asked). */
    layers_total: z.number().int().nonnegative(),
  })
  .refine((r) => (r.document === undefined) !== (r.ref === undefined), { message: "exactly one of document or ref is required" });
/** `memory.get` reply. */
export type MemoryGetResponse = z.infer<typeof MemoryGetResponse>;

/** Reads one session: `<prefix>.memory.get`. A missing session is a `not_found` error. */
export const MemoryGet = defineRpc({
  name: "memory.get",
  subject: (prefix) => subject(prefix, "memory", "get"),
  request: MemoryGetRequest,
  response: MemoryGetResponse,
});

/**
 * What a chat turn needs from a session, in one exchange: `<prefix>.memory.recall`. Persistence
 * picks the newest layers (at most `max_layers`) that fit `budget_tokens` ({@link fitLayers}) and
 * returns their messages, oldest first. A session that does not exist is `found: false`, not an
 * error. The reply travels by reference when large, like a document.
 */
export const MemoryRecall = defineRpc({
  name: "memory.recall",
  subject: (prefix) => subject(prefix, "memory", "recall"),
  request: z
    .object({
      ...Scope,
      /** `atlas.memory_layers`: recall at most this many of the newest layers. */
      max_layers: z.number().int().positive().optional(),
      /** Tokens the recalled messages may take ({@link estimateTokens}); no limit when left out. */
      budget_tokens: z.number().int().nonnegative().optional(),
      /**
       * Layers of this session the caller has appended and not yet seen acknowledged: persistence
       * answers once their records have reached it (read your writes without waiting for the
       * acknowledgement first), or after a short wait when one never comes (JetStream refused it).
       */
      after_layers: z.array(LayerId).max(32).optional(),
      ...ReplyKey,
    })
    .strict(),
  response: z
    .object({
      found: z.boolean(),
      /** Layers recalled, and layers in the session. */
      layers: z.number().int().nonnegative(),
      layers_total: z.number().int().nonnegative(),
      /** The recalled layers' messages, oldest first (or `ref`: the same array, parked). */
      messages: z.array(MemoryMessage).optional(),
      ref: PayloadRef.optional(),
      /** How many of those messages each recalled layer has, oldest first (the worker drops whole layers). */
      layer_sizes: z.array(z.number().int().nonnegative()).optional(),
    })
    .refine((r) => (r.messages === undefined) !== (r.ref === undefined), { message: "exactly one of messages or ref is required" }),
});

/** Most sessions one `memory.list` page holds. */
export const MEMORY_LIST_MAX = 100;

/** Lists a tenant's sessions, ordered by session id: `<prefix>.memory.list`. */
export const MemoryList = defineRpc({
  name: "memory.list",
  subject: (prefix) => subject(prefix, "memory", "list"),
  request: z
    .object({
      tenant: TenantId,
      limit: z.number().int().min(1).max(MEMORY_LIST_MAX).default(20),
      /** Cursor: list sessions whose id sorts after this one. */
      after: MemorySessionId.optional(),
    })
    .strict(),
  response: z.object({ data: z.array(SessionSummary), has_more: z.boolean() }),
});

/** Creates or replaces one session: `<prefix>.memory.put`. */
export const MemoryPut = defineRpc({
  name: "memory.put",
  subject: (prefix) => subject(prefix, "memory", "put"),
  request: z
    .object({
      ...Scope,
      ...DocumentPayload,
      /** Write only if the stored revision is this one (0: only if the session does not exist); else `conflict`. */
      if_revision: z.number().int().nonnegative().optional(),
    })
    .strict()
    .refine((r) => (r.document === undefined) !== (r.ref === undefined), { message: "exactly one of document or ref is required" }),
  response: z.object({ created: z.boolean(), session: SessionSummary }),
});

/** Deletes one session (transcript, pending appends, mirror file): `<prefix>.memory.delete`. */
export const MemoryDelete = defineRpc({
  name: "memory.delete",
  subject: (prefix) => subject(prefix, "memory", "delete"),
  request: z.object(Scope).strict(),
  response: z.object({ deleted: z.literal(true) }),
});

/** One append as it sits in the stream. */
export const MemoryAppendMessage = z
  .object({
    ...Scope,
    /** Model that answered; becomes the document's `model`. */
    model: z.string().min(1).max(256).nullable(),
    layer: MemoryLayer.optional(),
    /** The layer by reference (a {@link MemoryLayer} as JSON) when it is large. */
    ref: PayloadRef.optional(),
    /**
     * The layer as JSON sealed to persistence's transit key (an envelope, base64; context
     * `appendSealContext` of memory_keys.ts): how the api parks a layer in the fallback stream when
     * session memory is encrypted at rest.
     */
    sealed: z
      .base64()
      .max(Math.ceil(((MEMORY_INLINE_BYTES + 1024) * 4) / 3))
      .optional(),
  })
  .strict()
  .refine((r) => [r.layer, r.ref, r.sealed].filter((v) => v !== undefined).length === 1, {
    message: "exactly one of layer, ref or sealed is required",
  });
/** One append as it sits in the stream. */
export type MemoryAppendMessage = z.infer<typeof MemoryAppendMessage>;

/**
 * Appends one layer, in one exchange: `<prefix>.memory.add`. Persistence writes only the new
 * layer: it publishes one record on the session's log subject ({@link MemoryLog}) with the
 * caller's reply subject, idempotently by layer id (`Nats-Msg-Id`), so the reply is JetStream's
 * own acknowledgement — stored (`seq`), or refused (`error`) — three messages in all. Persistence's
 * refusals (invalid layer, earlier appends still queued) are ordinary error replies. When this
 * gets no answer, or JetStream refused the record, the api publishes {@link MemoryStale} (the
 * instances may have applied the record they saw) and the same message to {@link MemoryAppend}.
 */
export const MemoryAddLayer = defineRpc({
  name: "memory.add",
  subject: (prefix) => subject(prefix, "memory", "add"),
  request: MemoryAppendMessage,
  response: JetStreamPubReply,
});

/**
 * The `Nats-Msg-Id` of a layer's append, the same in the session log and the fallback stream:
 * JetStream stores one layer once within its de-duplication window.
 */
export function appendMsgId(tenant: string, sessionId: string, layerId: string): string {
  return `${sessionKey(tenant, sessionId)}/${layerId}`;
}

/**
 * The fallback append stream, for when {@link MemoryAddLayer} gets no answer: JetStream
 * publishes (`Nats-Msg-Id` = `<tenant>/<session>/<layer id>`) that outlive a persistence outage,
 * drained by persistence through the durable consumer {@link memoryNames}`.consumer`, one at a
 * time (in order), idempotently by layer id. Subject `<prefix>.memory.append.<tenant>.<session token>`.
 */
export const MemoryAppend = defineJetStream({
  name: "memory.append",
  subject: (prefix: string, p: { tenant: string; session_id: string }): string =>
    subject(prefix, "memory", "append", TenantId.parse(p.tenant), sessionToken(MemorySessionId.parse(p.session_id))),
  /** Every append subject of the prefix (the stream's subject filter). */
  wildcard: (prefix: string): string => `${prefix}.memory.append.>`,
  data: MemoryAppendMessage,
  /** The stream's configuration (persistence creates it). */
  stream: (prefix: string) => ({
    name: memoryNames(prefix).stream,
    subjects: [`${prefix}.memory.append.>`],
    retention: "workqueue" as const,
    storage: "file" as const,
    num_replicas: 1,
    discard: "old" as const,
    /** Two minutes of `Nats-Msg-Id` de-duplication, in nanoseconds. */
    duplicate_window: 120_000_000_000,
  }),
  /** The durable consumer's configuration: explicit acks, one message in flight (order). */
  consumer: (prefix: string) => ({
    durable_name: memoryNames(prefix).consumer,
    ack_policy: "explicit" as const,
    deliver_policy: "all" as const,
    max_ack_pending: 1,
    /** Fifteen seconds, in nanoseconds. */
    ack_wait: 15_000_000_000,
  }),
});

/**
 * The session logs: persistence's storage (stream {@link memoryNames}`.log`, file storage, limits
 * retention). Subject `<prefix>.memory.log.<tenant>.<session token>`, one message per layer (or
 * per whole document after a `PUT`); the stream sequence of a session's last message is its
 * revision. Only persistence publishes here; every persistence instance also subscribes (core
 * NATS), which keeps their caches current without one extra message. Format: `docs/memory.md`.
 */
export const MemoryLog = defineJetStream({
  name: "memory.log",
  subject: (prefix: string, p: { tenant: string; session_id: string }): string =>
    subject(prefix, "memory", "log", TenantId.parse(p.tenant), sessionToken(MemorySessionId.parse(p.session_id))),
  /** Every log subject of the prefix, and the subjects of one tenant. */
  wildcard: (prefix: string, tenant?: string): string =>
    tenant === undefined ? `${prefix}.memory.log.>` : `${prefix}.memory.log.${TenantId.parse(tenant)}.*`,
  stream: (prefix: string) => ({
    name: memoryNames(prefix).log,
    subjects: [`${prefix}.memory.log.>`],
    retention: "limits" as const,
    storage: "file" as const,
    num_replicas: 1,
    discard: "old" as const,
    /** Two minutes of `Nats-Msg-Id` (`<tenant>/<session>/<layer id>`) de-duplication, in nanoseconds. */
    duplicate_window: 120_000_000_000,
  }),
});

/** A session's cached state may be wrong (a log write failed after others saw it): `<prefix>.memory.stale`. */
export const MemoryStale = defineEvent({
  name: "memory.stale",
  subject: (prefix) => subject(prefix, "memory", "stale"),
  data: z.object(Scope),
});

/** Data of {@link MemoryDeleted}. */
export const MemoryDeletedEvent = z.object({
  tenant: TenantId,
  session_id: MemorySessionId,
  deleted_at: z.iso.datetime(),
});
/** Data of {@link MemoryDeleted}. */
export type MemoryDeletedEvent = z.infer<typeof MemoryDeletedEvent>;

/**
 * A session was deleted: `<prefix>.memory.deleted`. The seam for the scheduler, which drops the
 * session's KV state in every tier (L1 slot, L2 snapshot, L3 object) when it sees it.
 */
export const MemoryDeleted = defineEvent({
  name: "memory.deleted",
  subject: (prefix) => subject(prefix, "memory", "deleted"),
  data: MemoryDeletedEvent,
});
