/**
 * Format 1 storage, migrated at start. Format 1 kept each session as one whole document in the
 * KV bucket `<prefix>_memory`: a manifest `s.<tenant>.<session token>` holding the document (or
 * the `{gen, count, sha256}` of its chunks `c.<tenant>.<session token>.<gen>.<i>`), and a delete
 * marker on the manifest of a deleted session.
 *
 * Each manifest becomes the first record of its session's log — a `base` (a chunked document
 * keeps its chunks: the base points at them) or a `deleted` record for a delete marker — written
 * only when the log has no record of the session yet (revision check), then the manifest is
 * purged. A manifest that cannot be read is logged, counted and left for the next start; it
 * never stops the service. Several instances starting at once migrate each session once.
 *
 * @module
 */
import { isRevisionConflict, type JetStreamManager, type KV } from "@atlas/bus";
import { type SessionDocument as Doc, SessionDocument, sessionFromToken, sessionKey } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { z } from "zod";
import type { SessionLog } from "./log.ts";
import { LOG_FORMAT, type LogRecord } from "./records.ts";

const Manifest = z.object({
  v: z.literal(1),
  updated_at: z.string(),
  bytes: z.number().int().nonnegative(),
  body: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("inline"), doc: z.unknown() }),
    z.object({ kind: z.literal("chunks"), gen: z.string(), count: z.number().int().positive(), sha256: z.string() }),
  ]),
});

/** What the migration did. */
export interface MigrationReport {
  migrated: number;
  deleted: number;
  /** Sessions the log already had (migrated by another instance, or written since). */
  skipped: number;
  failed: { key: string; reason: string }[];
}

/** Options for {@link migrateFormat1}. */
export interface MigrateOptions {
  kv: KV;
  jsm: JetStreamManager;
  bucket: string;
  log: SessionLog;
  logger: Logger;
}

/** Moves every format-1 manifest into the log (see the module doc). */
export async function migrateFormat1(o: MigrateOptions): Promise<MigrationReport> {
  const report: MigrationReport = { migrated: 0, deleted: 0, skipped: 0, failed: [] };
  const head = `$KV.${o.bucket}.`;
  const info = await o.jsm.streams.info(`KV_${o.bucket}`, { subjects_filter: `${head}s.>` });
  for (const subject of Object.keys(info.state.subjects ?? {}).sort()) {
    const key = subject.slice(head.length);
    const m = /^s\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(key);
    try {
      if (m?.[1] === undefined || m[2] === undefined) throw new Error("not a session manifest");
      const tenant = m[1];
      const sessionId = sessionFromToken(m[2]);
      const entry = await o.kv.get(key);
      if (entry === null) continue;
      let rec: LogRecord;
      if (entry.operation !== "PUT") rec = o.log.deletedRecord();
      else {
        const manifest = Manifest.parse(entry.json());
        const body = manifest.body;
        const at = manifest.updated_at;
        if (body.kind === "inline") rec = { ...(await o.log.baseRecord(checked(body.doc, tenant, sessionId))), at };
        else {
          // The chunks hold the document's JSON already: the base points at them.
          const chunks = { gen: body.gen, count: body.count, sha256: body.sha256, bytes: manifest.bytes };
          const bytes = await o.log.chunks.read(tenant, sessionId, chunks);
          if (bytes === undefined) throw new Error("a chunk of the document is missing");
          checked(JSON.parse(new TextDecoder().decode(bytes)), tenant, sessionId);
          rec = { v: LOG_FORMAT, op: "base", id: `b:${crypto.randomUUID()}`, at, chunks };
        }
      }
      try {
        await o.log.publish(tenant, sessionId, rec, { expect: 0 });
        if (rec.op === "deleted") report.deleted += 1;
        else report.migrated += 1;
      } catch (err) {
        if (!isRevisionConflict(err)) throw err;
        report.skipped += 1; // the log has this session already
      }
      await o.jsm.streams.purge(`KV_${o.bucket}`, { filter: subject });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      report.failed.push({ key, reason });
      o.logger.error({ key, reason }, "Cannot migrate a format-1 session; left in place for the next start");
    }
  }
  if (report.migrated + report.deleted + report.skipped + report.failed.length > 0) {
    o.logger.info({ ...report, failed: report.failed.length }, "Migrated format-1 sessions into the session log");
  }
  return report;
}

function checked(raw: unknown, tenant: string, sessionId: string): Doc {
  const doc = SessionDocument.parse(raw);
  if (doc.tenant !== tenant || doc.session_id !== sessionId) throw new Error(`holds session "${sessionKey(doc.tenant, doc.session_id)}"`);
  return doc;
}
