/**
 * Persistence's mailbox: `memory.{recall,add}` (a chat turn: one exchange each) and
 * `memory.{get,list,put,delete}` (the CRUD endpoints), all tenant-scoped, in the queue group
 * `persistence`. Large payloads travel through the transfer store (claim check).
 *
 * @module
 */
import { type Bus, BusError, type ClaimCheck, type JetStreamManager } from "@atlas/bus";
import {
  MEMORY_INLINE_BYTES,
  MemoryAddLayer,
  MemoryAppend,
  MemoryDelete,
  MemoryDeleted,
  MemoryGet,
  MemoryList,
  type MemoryNames,
  MemoryPut,
  MemoryRecall,
  REPLY_KEY_ID,
  SessionDocument,
} from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { type Sealer, sealTo, transitRecipientOf } from "@atlas/sealed";
import { appendLayer } from "./append_layer.ts";
import type { AppendConsumer } from "./appends.ts";
import type { Mirror } from "./mirror.ts";
import { byteLength, layerRecordId, tail } from "./records.ts";
import type { Sessions } from "./sessions.ts";

/** How long a recall waits for the session's fallback appends still queued (read your writes). */
const RECALL_SETTLE_MS = 1000;
/** How long an append waits for them before it is sent back to the fallback stream (order). */
const ADD_SETTLE_MS = 500;

/** What the handlers use. */
export interface HandlerDeps {
  bus: Bus;
  jsm: JetStreamManager;
  names: MemoryNames;
  sessions: Sessions;
  appends: AppendConsumer;
  transfer: ClaimCheck;
  /** Opens appends sealed to the transit key. */
  sealer: Sealer;
  mirror: Mirror;
  log: Logger;
}

/** Serves every memory rpc. */
export function serveMemory(d: HandlerDeps): void {
  const { bus, sessions, appends, transfer, sealer } = d;
  /** A large reply is sealed to the caller's key when it sent one and memory is encrypted at rest. */
  const replySeal = (req: { reply_key?: string | undefined }) => {
    const key = req.reply_key;
    if (key === undefined || !sealer.encrypted) return undefined;
    return (bytes: Uint8Array, name: string) => sealTo(transitRecipientOf(REPLY_KEY_ID, key), bytes, name);
  };

  bus.serve(
    MemoryRecall,
    async (req) => {
      // Read your writes: the caller's appends still in flight (their records are on their way
      // here), and the session's fallback appends still queued.
      if (req.after_layers !== undefined) await sessions.seen.wait(req.after_layers.map(layerRecordId), RECALL_SETTLE_MS);
      await appends.settle(req.tenant, req.session_id, RECALL_SETTLE_MS);
      const r = await sessions.recall(req.tenant, req.session_id, req.max_layers, req.budget_tokens);
      const packed = await transfer.pack(r.messages, "get", replySeal(req));
      return {
        found: r.found,
        layers: r.layers,
        layers_total: r.layers_total,
        layer_sizes: r.layer_sizes,
        ...(packed.ref === undefined ? { messages: r.messages } : { ref: packed.ref }),
      };
    },
    {},
  );

  // The record goes to the session's log with the api's reply subject: JetStream's ack answers it.
  bus.serveForward(
    MemoryAddLayer,
    async (req) => {
      // Appends of this session still queued in the fallback stream go first: if they do not
      // drain at once, this one joins them there (the api publishes it), so the order holds.
      if (!(await appends.settle(req.tenant, req.session_id, ADD_SETTLE_MS))) {
        throw new BusError("unavailable", "Earlier appends of this session are still queued", { retryAfterS: 1 });
      }
      const layer = await appendLayer(req, { transfer, sealer });
      const message = await sessions.addMessage(req.tenant, req.session_id, req.model, layer);
      if (req.ref !== undefined) await transfer.drop(req.ref);
      return message;
    },
    {},
  );

  bus.serve(
    MemoryGet,
    async (req) => {
      await appends.settle(req.tenant, req.session_id, req.settle_ms);
      const state = await sessions.validated(req.tenant, req.session_id);
      const stored = state.doc;
      if (stored === undefined) throw new BusError("not_found", `Session "${req.session_id}" does not exist`);
      const doc = { ...stored, layers: tail(stored.layers, req.tail_layers, req.tail_bytes) };
      const common = { revision: state.seq ?? 1, layers_total: stored.layers.length };
      if (byteLength(doc) <= MEMORY_INLINE_BYTES) return { ...common, document: doc };
      const packed = await transfer.pack(doc, "get", replySeal(req));
      return packed.ref === undefined ? { ...common, document: doc } : { ...common, ref: packed.ref };
    },
    {},
  );

  bus.serve(MemoryList, (req) => sessions.list(req.tenant, { limit: req.limit, after: req.after }), {});

  bus.serve(
    MemoryPut,
    async (req) => {
      let raw: unknown = req.document;
      if (req.ref !== undefined) {
        raw = await transfer.read(req.ref);
        await transfer.drop(req.ref);
      }
      const parsed = SessionDocument.safeParse(raw);
      if (!parsed.success) throw BusError.fromZod(parsed.error, "document");
      const doc = parsed.data;
      if (doc.tenant !== req.tenant) {
        throw new BusError("bad_request", `Document tenant "${doc.tenant}" is not "${req.tenant}"`, { param: "tenant" });
      }
      if (doc.session_id !== req.session_id) {
        throw new BusError("bad_request", `Document session_id "${doc.session_id}" is not "${req.session_id}"`, { param: "session_id" });
      }
      const r = await sessions.put(doc, req.if_revision);
      return { created: r.created, session: r.summary };
    },
    {},
  );

  bus.serve(
    MemoryDelete,
    async (req) => {
      // Appends still queued for this session would bring it back: drop them first.
      await d.jsm.streams
        .purge(d.names.stream, { filter: MemoryAppend.subject(bus.prefix, req) })
        .catch((err: unknown) => d.log.warn({ err }, "Cannot purge queued appends of a deleted session"));
      const existed = await sessions.delete(req.tenant, req.session_id);
      if (!existed) throw new BusError("not_found", `Session "${req.session_id}" does not exist`);
      await d.mirror.remove(req.tenant, req.session_id);
      bus.publish(MemoryDeleted, { tenant: req.tenant, session_id: req.session_id, deleted_at: new Date().toISOString() });
      return { deleted: true as const };
    },
    {},
  );
}
