/**
 * The persistence service: session memory in JetStream.
 *
 * - Serves `memory.{get,list,put,delete}` (tenant-scoped) from the KV bucket (`store.ts`).
 * - Applies the append stream in order, once per layer id (`appends.ts`).
 * - Mirrors sessions to `ATLAS_MEMORY_PATH` and imports that mirror at start (`mirror.ts`).
 * - Publishes `memory.deleted` after a delete: the scheduler's seam for dropping KV state.
 *
 * It creates what it needs explicitly at start (the KV bucket, the transfer object store, the
 * append stream and its durable consumer): opening a missing bucket "succeeds" on nats.js and
 * fails later with a misleading error.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import {
  MEMORY_INLINE_BYTES,
  MemoryAppend,
  MemoryDelete,
  MemoryDeleted,
  MemoryGet,
  MemoryList,
  MemoryPut,
  memoryNames,
  ServiceName,
  SessionDocument,
} from "@atlas/contracts";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { AppendConsumer, ensureAppendStream } from "./appends.ts";
import { Mirror } from "./mirror.ts";
import { byteLength, SessionStore } from "./store.ts";
import { Transfer } from "./transfer.ts";

/** `get-`/`put-` transfer objects older than this were left by a caller that died. */
const TRANSFER_MAX_AGE_MS = 60 * 60_000;

/** Starts persistence and returns its handle. */
export async function startPersistence(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus, config, log } = ctx;
  const prefix = bus.prefix;
  const names = memoryNames(prefix);
  const jsm = await jetstreamManager(bus.nc, { timeout: 5000 });
  const js = jetstream(bus.nc, { timeout: 5000 });
  const kv = await new Kvm(js).create(names.kv, { history: 1, storage: "file", description: "ATLAS session memory" });
  const objects = await new Objm(js).create(names.transfer, { storage: "file", description: "ATLAS session memory transfers" });
  await ensureAppendStream(jsm, prefix);
  const store = new SessionStore({ kv, jsm, bucket: names.kv });
  const transfer = new Transfer(objects);
  const mirror = new Mirror({ root: config.ATLAS_MEMORY_PATH, store, log, intervalS: config.ATLAS_AUTO_SAVE_INTERVAL });
  await mirror.importAll();
  await mirror.start();
  const appends = new AppendConsumer({ js, jsm, store, transfer, names, prefix, log });

  /** Waits (bounded) until no append of this session is still queued in the stream. */
  const settle = async (tenant: string, sessionId: string, ms: number) => {
    if (ms <= 0) return;
    const subject = MemoryAppend.subject(prefix, { tenant, session_id: sessionId });
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const pending = await jsm.streams.getMessage(names.stream, { last_by_subj: subject }).catch(() => null);
      if (pending === null) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  bus.serve(
    MemoryGet,
    async (req) => {
      await settle(req.tenant, req.session_id, req.settle_ms);
      const stored = await store.read(req.tenant, req.session_id);
      if (stored === undefined) throw new BusError("not_found", `Session "${req.session_id}" does not exist`);
      const doc = { ...stored.doc, layers: tail(stored.doc.layers, req.tail_layers, req.tail_bytes) };
      const trimmed = doc.layers.length !== stored.doc.layers.length;
      const bytes = trimmed ? byteLength(doc) : stored.bytes;
      const common = { revision: stored.revision, layers_total: stored.doc.layers.length };
      if (bytes <= MEMORY_INLINE_BYTES) return { ...common, document: doc };
      const packed = await transfer.pack(doc, "get");
      return packed.ref === undefined ? { ...common, document: doc } : { ...common, ref: packed.ref };
    },
    {},
  );

  bus.serve(MemoryList, (req) => store.list(req.tenant, { limit: req.limit, after: req.after }), {});

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
      const r = await store.write(doc, req.if_revision === undefined ? {} : { ifRevision: req.if_revision });
      return { created: r.created, session: r.summary };
    },
    {},
  );

  bus.serve(
    MemoryDelete,
    async (req) => {
      // Appends still queued for this session would bring it back: drop them first.
      await jsm.streams
        .purge(names.stream, { filter: MemoryAppend.subject(prefix, req) })
        .catch((err: unknown) => log.warn({ err }, "Cannot purge queued appends of a deleted session"));
      const existed = await store.delete(req.tenant, req.session_id);
      if (!existed) throw new BusError("not_found", `Session "${req.session_id}" does not exist`);
      await mirror.remove(req.tenant, req.session_id);
      bus.publish(MemoryDeleted, { tenant: req.tenant, session_id: req.session_id, deleted_at: new Date().toISOString() });
      return { deleted: true as const };
    },
    {},
  );

  appends.start();

  // Health: refreshed in the background so a health request never waits on JetStream.
  let health = {
    jetstream: { ok: true, detail: "starting" },
    bucket: {} as Record<string, unknown>,
    stream: {} as Record<string, unknown>,
  };
  let maintenance = 0;
  const check = async () => {
    try {
      const [status, streamInfo, consumerInfo] = await Promise.all([
        kv.status(),
        jsm.streams.info(names.stream),
        jsm.consumers.info(names.stream, names.consumer),
      ]);
      health = {
        jetstream: { ok: true, detail: `bucket "${names.kv}" holds ${status.values} values, ${status.size} B` },
        bucket: { name: names.kv, values: status.values, bytes: status.size, history: status.history, storage: status.storage },
        stream: {
          name: names.stream,
          messages: streamInfo.state.messages,
          consumer: names.consumer,
          pending: consumerInfo.num_pending,
          ack_pending: consumerInfo.num_ack_pending,
          redelivered: consumerInfo.num_redelivered,
        },
      };
    } catch (err) {
      health = { ...health, jetstream: { ok: false, detail: err instanceof Error ? err.message : String(err) } };
      log.warn({ err }, "JetStream is not available");
    }
    // Every minute: collect what dead writers and callers left behind.
    if (++maintenance % 12 === 0) {
      await store.collectOrphans().catch((err: unknown) => log.warn({ err }, "Cannot collect orphan chunks"));
      await transfer.collect(TRANSFER_MAX_AGE_MS).catch((err: unknown) => log.warn({ err }, "Cannot collect transfer objects"));
    }
  };
  await check();
  const timer = setInterval(() => void check(), 5000);
  timer.unref();

  return {
    health: () => {
      const m = mirror.status();
      const corrupt = m.import?.corrupt ?? [];
      const lag = Number(health.stream.pending ?? 0) + Number(health.stream.ack_pending ?? 0);
      return {
        state: health.jetstream.ok ? (m.last_error === null ? "ok" : "degraded") : "down",
        checks: {
          jetstream: health.jetstream,
          appends: {
            ok: appends.stats.dropped === 0,
            detail: `lag ${lag}, applied ${appends.stats.applied}, dropped ${appends.stats.dropped}`,
          },
          mirror: {
            ok: m.last_error === null,
            detail: m.last_error ?? `last backup ${m.last_backup_at ?? "never"} to ${m.path}`,
          },
          import: {
            ok: corrupt.length === 0,
            detail:
              corrupt.length === 0
                ? `imported ${m.import?.imported ?? 0}, skipped ${m.import?.skipped ?? 0}`
                : `skipped ${corrupt.length} corrupt file(s): ${corrupt
                    .slice(0, 5)
                    .map((c) => c.file)
                    .join(", ")}`,
          },
        },
        details: { bucket: health.bucket, stream: { ...health.stream, lag }, appends: appends.stats, mirror: m },
      };
    },
    stop: async () => {
      clearInterval(timer);
      await appends.stop();
      await mirror.stop();
    },
  };
}

/** The newest layers: at most `layers` of them, whose message text totals at most `bytes`. */
export function tail<L extends { messages: { content: string }[] }>(all: L[], layers?: number, bytes?: number): L[] {
  let out = layers === undefined ? all : all.slice(Math.max(0, all.length - layers));
  if (bytes !== undefined) {
    let total = 0;
    let keep = 0;
    for (let i = out.length - 1; i >= 0; i--) {
      total += out[i]?.messages.reduce((s, m) => s + Buffer.byteLength(m.content), 0) ?? 0;
      if (total > bytes) break;
      keep += 1;
    }
    out = out.slice(out.length - keep);
  }
  return out;
}

/** The persistence service, for `runService` and in-process tests. */
export const persistenceService: ServiceDefinition = {
  name: ServiceName.persistence,
  description: "Session memory, KV-state objects and backups",
  start: startPersistence,
};
