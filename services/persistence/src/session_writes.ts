/**
 * Whole-session writes to the log (`log.ts`), each checked against the session's revision (the
 * stream sequence of its last record): a document put as one `base` record, a deletion (a
 * `deleted` record), and the compaction of a long run of records into one `base` holding the same
 * document. A write that went through purges the records before it; a `base` that did not purges
 * the chunks it wrote. No cache is touched here: every instance's cache follows these records
 * from the log's own messages (`sessions.ts`).
 *
 * @module
 */
import { BusError, isRevisionConflict } from "@atlas/bus";
import type { SessionDocument as Doc, SessionSummary } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { genOf, type SessionLog } from "./log.ts";
import { type SessionState, summaryOf } from "./records.ts";

/** The counters these writes add to (the `Sessions` stats they belong to). */
export interface WriteCounters {
  writes: number;
  compactions: number;
}

/** Revision-checked `base` and `deleted` records of whole sessions. */
export class SessionWrites {
  readonly #log: SessionLog;
  readonly #logger: Logger;
  readonly #counters: WriteCounters;

  constructor(log: SessionLog, logger: Logger, counters: WriteCounters) {
    this.#log = log;
    this.#logger = logger;
    this.#counters = counters;
  }

  /**
   * Writes a whole document as one `base` record. With `ifRevision` only at that revision (0:
   * only when the session does not exist), else `conflict`; without it, a deliberate replace.
   */
  async put(doc: Doc, ifRevision?: number): Promise<{ created: boolean; revision: number; summary: SessionSummary }> {
    const { tenant, session_id: sessionId } = doc;
    for (let attempt = 0; ; attempt++) {
      const last = await this.#log.last(tenant, sessionId);
      const exists = last !== null && last.rec.op !== "deleted";
      const current = last?.seq ?? 0;
      if (ifRevision !== undefined && (ifRevision === 0 ? exists : !exists || ifRevision !== current)) {
        throw new BusError("conflict", `Session "${sessionId}" is at revision ${exists ? current : 0}, not ${ifRevision}`);
      }
      const rec = await this.#log.baseRecord(doc);
      try {
        const ack = await this.#log.publish(tenant, sessionId, rec, { expect: current });
        this.#counters.writes += 1;
        await this.#log
          .purgeBefore(tenant, sessionId, ack.seq)
          .catch((err: unknown) => this.#logger.warn({ err }, "Cannot purge old records"));
        return { created: !exists, revision: ack.seq, summary: summaryOf(doc, ack.seq) };
      } catch (err) {
        const gen = genOf(rec);
        if (gen !== undefined) await this.#log.chunks.purge(tenant, sessionId, gen).catch(() => {});
        if (!isRevisionConflict(err)) throw err;
        if (ifRevision !== undefined || attempt >= 20) {
          throw new BusError("conflict", `Session "${sessionId}" was changed by another writer; retry`, { retryable: true, cause: err });
        }
      }
    }
  }

  /** Deletes a session (a `deleted` record stays); false when there was none. */
  async delete(tenant: string, sessionId: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      const last = await this.#log.last(tenant, sessionId);
      if (last === null || last.rec.op === "deleted") return false;
      try {
        const ack = await this.#log.publish(tenant, sessionId, this.#log.deletedRecord(), { expect: last.seq });
        this.#counters.writes += 1;
        await this.#log
          .purgeBefore(tenant, sessionId, ack.seq)
          .catch((err: unknown) => this.#logger.warn({ err }, "Cannot purge old records"));
        await this.#log.chunks
          .purgeSession(tenant, sessionId, Date.now())
          .catch((err: unknown) => this.#logger.warn({ err }, "Cannot purge chunks"));
        return true;
      } catch (err) {
        if (!isRevisionConflict(err) || attempt >= 20) throw err;
      }
    }
  }

  /** Replaces a long run of records by one `base` holding the same document; failures are logged, not thrown. */
  async compact(state: SessionState): Promise<void> {
    const { tenant, sessionId, doc, seq, lastId } = state;
    if (doc === undefined || seq === undefined || lastId === null) return;
    try {
      const rec = await this.#log.baseRecord(doc, lastId);
      let written: number;
      try {
        written = (await this.#log.publish(tenant, sessionId, rec, { expect: seq })).seq;
      } catch (err) {
        // The base did not land: its chunks are nobody's. (Once it has landed they are the
        // session's, whatever happens to the purge below.)
        const gen = genOf(rec);
        if (gen !== undefined) await this.#log.chunks.purge(tenant, sessionId, gen).catch(() => {});
        if (!isRevisionConflict(err)) throw err;
        return;
      }
      this.#counters.compactions += 1;
      await this.#log.purgeBefore(tenant, sessionId, written);
    } catch (err) {
      this.#logger.warn({ err, tenant }, "Cannot compact a session log");
    }
  }
}
