/**
 * The persistence service: session memory in JetStream, owned here end to end.
 *
 * - Serves `memory.{recall,add}` — a chat turn's memory, one exchange each — and
 *   `memory.{get,list,put,delete}` (tenant-scoped) from the session log (`handlers.ts`,
 *   `sessions.ts`, `log.ts`).
 * - Drains the fallback append stream, in order, once per layer id (`appends.ts`).
 * - Publishes the transit key the api seals what it parks here to (`transit_key.ts`).
 * - Mirrors sessions to `ATLAS_MEMORY_PATH` and imports that mirror at start (`mirror.ts`).
 * - Migrates format-1 documents into the log at start (`legacy.ts`).
 * - Publishes `memory.deleted` after a delete: the scheduler's seam for dropping KV state.
 *
 * It creates what it needs explicitly at start (the KV bucket for chunks, the log stream, the
 * transfer object store, the append stream and its durable consumer): opening a missing bucket
 * "succeeds" on nats.js and fails later with a misleading error. It answers rpcs only once the
 * log is followed, format 1 is migrated and the mirror imported.
 *
 * @module
 */
import { ClaimCheck } from "@atlas/bus";
import { KEY_WRITER_STREAM_LOCKS, memoryKeysBucket, memoryNames, ServiceName, sessionFromToken } from "@atlas/contracts";
import { openSealer } from "@atlas/sealed";
import type { ServiceContext, ServiceDefinition, ServiceHandle } from "@atlas/service";
import { AppendConsumer, ensureAppendStream } from "./appends.ts";
import { Chunks } from "./chunks.ts";
import { serveMemory } from "./handlers.ts";
import { migrateFormat1 } from "./legacy.ts";
import { ensureLogStream, SessionLog } from "./log.ts";
import { Mirror } from "./mirror.ts";
import { Sessions } from "./sessions.ts";
import { publishTransitKey } from "./transit_key.ts";

/** `get-`/`put-` transfer objects older than this were left by a caller that died. */
const TRANSFER_MAX_AGE_MS = 60 * 60_000;

/** Starts persistence and returns its handle. */
export async function startPersistence(ctx: ServiceContext): Promise<ServiceHandle> {
  const { bus, config, log } = ctx;
  const prefix = bus.prefix;
  const names = memoryNames(prefix);
  const jetstream = bus.jetstream;
  const jsm = await jetstream.manager();
  const js = jetstream.client;
  const kv = await jetstream.kv(names.kv, { history: 1, description: "ATLAS session memory chunks" });
  const objects = await jetstream.objectStore(names.transfer, { description: "ATLAS session memory transfers" });
  await ensureLogStream(jetstream, prefix);
  await ensureAppendStream(jetstream, prefix);
  // Encryption at rest: a wrong or missing master key stops the start here, with the reason.
  // Workers may write the snapshot key: the bucket has no rollups (a header that would wipe every
  // other key), purges or message deletes, for anyone (docs/security.md).
  const { kv: keys, lacking } = await jetstream.kvWith(memoryKeysBucket(prefix), {
    history: 1,
    description: "ATLAS wrapped data keys",
    settings: KEY_WRITER_STREAM_LOCKS,
  });
  if (lacking.length > 0) {
    log.warn(
      { bucket: memoryKeysBucket(prefix), lacking },
      "The wrapped data keys' bucket was made by an older version: a worker could wipe it with a rollup; see docs/security.md to recreate it",
    );
  }
  const sealer = await openSealer(config, keys);
  const rotationDue = sealer.keyring !== undefined && (await sealer.keyring.rotationDue());
  if (rotationDue) log.warn("The data keys are wrapped by a previous master key: run `npm run memory-key -- rotate`");
  log.info({ encrypted: sealer.encrypted, codec: sealer.codec, master: sealer.keyring?.masterKcv ?? null }, "Session memory at rest");
  const chunks = new Chunks({ kv, jsm, bucket: names.kv });
  const sessionLog = new SessionLog({ js, jsm, prefix, chunks, sealer });
  const sessions = new Sessions({ bus, log: sessionLog, logger: log });
  await sessions.start();
  const migration = await migrateFormat1({ kv, jsm, bucket: names.kv, log: sessionLog, logger: log });
  // What the api parks here is sealed to the transit key when memory is encrypted (transit_key.ts).
  const transitKey = await publishTransitKey(keys, sealer, log);
  const transfer = new ClaimCheck({
    store: async () => objects,
    refusal: "bad_request",
    open: (stored, name) => sealer.open(stored, name),
  });
  const mirror = new Mirror({ root: config.ATLAS_MEMORY_PATH, sessions, log, intervalS: config.ATLAS_AUTO_SAVE_INTERVAL });
  await mirror.importAll();
  await mirror.start();
  const appends = new AppendConsumer({ bus, js, jsm, sessions, transfer, sealer, names, log });
  appends.start();
  serveMemory({ bus, jsm, names, sessions, appends, transfer, sealer, mirror, log });

  // Health: refreshed in the background so a health request never waits on JetStream.
  let health = {
    jetstream: { ok: true, detail: "starting" },
    log: {} as Record<string, unknown>,
    bucket: {} as Record<string, unknown>,
    stream: {} as Record<string, unknown>,
  };
  let maintenance = 0;
  const check = async () => {
    try {
      const [state, status, streamInfo, consumerInfo] = await Promise.all([
        sessionLog.state(),
        kv.status(),
        jsm.streams.info(names.stream),
        jsm.consumers.info(names.stream, names.consumer),
      ]);
      health = {
        jetstream: {
          ok: true,
          detail: `log "${names.log}" holds ${state.sessions} sessions in ${state.messages} records, ${state.bytes} B`,
        },
        log: { name: names.log, ...state },
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
      await chunks
        .collect((tenant, token) => sessions.liveGenerations(tenant, sessionFromToken(token)))
        .catch((err: unknown) => log.warn({ err }, "Cannot collect orphan chunks"));
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
            detail: `fallback lag ${lag}, applied ${appends.stats.applied}, dropped ${appends.stats.dropped}`,
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
          at_rest: {
            ok: sealer.stats.refused === 0,
            detail: `${sealer.encrypted ? "encrypted (AES-256-GCM)" : "not encrypted"}, codec ${sealer.codec}; ${sealer.stats.refused} record(s) refused (changed or wrong key)`,
          },
          migration: {
            ok: migration.failed.length === 0,
            detail: `format 1: migrated ${migration.migrated}, deleted ${migration.deleted}, failed ${migration.failed.length}`,
          },
        },
        details: {
          log: health.log,
          cache: sessions.stats,
          bucket: health.bucket,
          stream: { ...health.stream, lag },
          appends: appends.stats,
          mirror: m,
          migration,
          at_rest: {
            encrypted: sealer.encrypted,
            codec: sealer.codec,
            master: sealer.keyring?.masterKcv ?? null,
            rotation_due: rotationDue,
            /** The published transit key the api seals what it parks here to (null: none, not encrypted). */
            transit_key: transitKey?.id ?? null,
            ...sealer.stats,
          },
        },
      };
    },
    stop: async () => {
      clearInterval(timer);
      await appends.stop();
      await mirror.stop();
    },
  };
}

/** The persistence service, for `runService` and in-process tests. */
export const persistenceService: ServiceDefinition = {
  name: ServiceName.persistence,
  description: "Session memory, KV-state objects and backups",
  start: startPersistence,
};
