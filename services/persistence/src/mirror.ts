/**
 * The JSON mirror of every session under `ATLAS_MEMORY_PATH`: `<root>/<tenant>/<session>.json`,
 * pretty-printed, written atomically (temporary file + rename). It is the backup and the
 * human-readable export. With a master key configured (encryption at rest) each file is instead
 * `<session>.sealed`: the same JSON in an envelope (`@atlas/sealed`) encrypted with the tenant's
 * data key and bound to the session, and `<root>/memory-keys.json` holds the wrapped data keys
 * (useless without the master key), so the folder alone restores a lost JetStream store.
 *
 * - Every record of the session log marks its session dirty (also those written by another
 *   persistence instance: each one hears every record); every `ATLAS_AUTO_SAVE_INTERVAL`
 *   seconds the dirty ones are written from the session cache, deleted ones removed. Stopping
 *   the service writes what is still dirty.
 * - At start, {@link Mirror.importAll} puts every valid file whose session the log lacks (no
 *   record at all: a deleted session keeps its `deleted` record and is not brought back).
 *   A corrupt file is logged, listed in health and skipped; it never stops the service.
 *
 * @module
 */
import { access, mkdir, readdir, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { isRevisionConflict } from "@atlas/bus";
import { MemorySessionId, SessionDocument, sessionKey, TenantId } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { tenantScope } from "@atlas/sealed";
import type { Sessions } from "./sessions.ts";

/** A file the import skipped, and why. */
export interface CorruptFile {
  file: string;
  reason: string;
}

/** What the last import did. */
export interface ImportReport {
  imported: number;
  /** Files whose session JetStream already has (or deleted on purpose). */
  skipped: number;
  corrupt: CorruptFile[];
}

/** Mirror state for the health report. */
export interface MirrorStatus {
  path: string;
  interval_s: number;
  last_backup_at: string | null;
  /** Files written (and removed) by the last backup. */
  last_written: number;
  last_removed: number;
  /** Sessions changed since the last backup. */
  dirty: number;
  last_error: string | null;
  import: ImportReport | null;
}

/** Options for {@link Mirror}. */
export interface MirrorOptions {
  root: string;
  sessions: Sessions;
  log: Logger;
  /** Seconds between backups; 0 writes only at stop. */
  intervalS: number;
}

type Dirty = { tenant: string; sessionId: string; deleted: boolean };

/** Extension of an encrypted mirror file. */
const SEALED = ".sealed";
/** The wrapped data keys beside the tenant folders (a plain file: the import skips it as a tenant). */
const KEYS_FILE = "memory-keys.json";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The readable JSON mirror of every session. */
export class Mirror {
  readonly #o: MirrorOptions;
  readonly #dirty = new Map<string, Dirty>();
  #watching = false;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #status: MirrorStatus;
  /** The wrapped keys as this instance last wrote them to the keys file. */
  #keysWritten: string | undefined;

  constructor(options: MirrorOptions) {
    this.#o = options;
    this.#status = {
      path: options.root,
      interval_s: options.intervalS,
      last_backup_at: null,
      last_written: 0,
      last_removed: 0,
      dirty: 0,
      last_error: null,
      import: null,
    };
  }

  /** Where a session's file lives (`.sealed` when encrypted at rest, else `.json`). */
  fileOf(tenant: string, sessionId: string, sealed = this.#o.sessions.log.sealer.encrypted): string {
    return join(this.#o.root, tenant, `${sessionId}${sealed ? SEALED : ".json"}`);
  }

  /** The file of the wrapped data keys (written with every backup when encrypted). */
  get keysFile(): string {
    return join(this.#o.root, KEYS_FILE);
  }

  async #unlinkBoth(tenant: string, sessionId: string): Promise<void> {
    await unlink(this.fileOf(tenant, sessionId, false)).catch(() => {});
    await unlink(this.fileOf(tenant, sessionId, true)).catch(() => {});
  }

  /** The health view. */
  status(): MirrorStatus {
    return { ...this.#status, dirty: this.#dirty.size };
  }

  /** Imports every valid file whose session JetStream lacks; never throws for a bad file. */
  async importAll(): Promise<ImportReport> {
    const { root, sessions, log } = this.#o;
    const report: ImportReport = { imported: 0, skipped: 0, corrupt: [] };
    const corrupt = (file: string, reason: string) => {
      report.corrupt.push({ file, reason });
      log.warn({ file, reason }, "Skipped a corrupt session file in the mirror");
    };
    const sealer = sessions.log.sealer;
    // The wrapped data keys of a backup go back into a store that lost them (before any file is opened).
    const keys = await readFile(this.keysFile, "utf8").catch(() => null);
    if (keys !== null && sealer.keyring !== undefined) {
      const { restored, unusable } = await sealer.keyring.importWrapped(JSON.parse(keys) as unknown[]);
      if (restored > 0) log.info({ restored }, "Restored wrapped data keys from the mirror");
      if (unusable.length > 0) log.error({ unusable }, "Data keys of the mirror cannot be unwrapped with the configured master keys");
    }
    let tenants: string[];
    try {
      tenants = await readdir(root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      tenants = [];
    }
    for (const tenant of tenants.sort()) {
      const dir = join(root, tenant);
      let files: string[];
      try {
        files = await readdir(dir);
      } catch {
        continue; // a plain file at the top level: not ours
      }
      if (!TenantId.safeParse(tenant).success) {
        for (const f of files.filter((f) => f.endsWith(".json") || f.endsWith(SEALED)))
          corrupt(join(dir, f), `"${tenant}" is not a tenant id`);
        continue;
      }
      for (const name of files.sort()) {
        const file = join(dir, name);
        if (name.endsWith(".tmp")) {
          await rm(file, { force: true }); // left by a write that never finished
          continue;
        }
        const ext = name.endsWith(".json") ? ".json" : name.endsWith(SEALED) ? SEALED : undefined;
        if (ext === undefined) continue;
        const sessionId = name.slice(0, -ext.length);
        if (!MemorySessionId.safeParse(sessionId).success) {
          corrupt(file, `"${sessionId}" is not a session id`);
          continue;
        }
        let doc: SessionDocument;
        try {
          const raw = await readFile(file);
          let text: string;
          try {
            // A plain `.json` is not an envelope: read as it is (counted), or refused under ATLAS_MEMORY_REQUIRE_SEALED.
            text = decoder.decode(await sealer.open(raw, sessionKey(tenant, sessionId)));
          } catch (err) {
            corrupt(file, `cannot be opened: ${err instanceof Error ? err.message : String(err)}`);
            continue;
          }
          const parsed = SessionDocument.safeParse(JSON.parse(text));
          if (!parsed.success) {
            const issue = parsed.error.issues[0];
            corrupt(file, `invalid document at "${issue?.path.join(".")}": ${issue?.message}`);
            continue;
          }
          doc = parsed.data;
        } catch (err) {
          corrupt(file, `not JSON: ${err instanceof Error ? err.message : String(err)}`);
          continue;
        }
        if (doc.tenant !== tenant || doc.session_id !== sessionId) {
          corrupt(file, `holds session "${sessionKey(doc.tenant, doc.session_id)}", not "${sessionKey(tenant, sessionId)}"`);
          continue;
        }
        // With a key, a plain file is written again sealed (and removed) by the first backup.
        if (ext === ".json" && sealer.encrypted) this.#dirty.set(sessionKey(tenant, sessionId), { tenant, sessionId, deleted: false });
        const known = sessions.hasRecords(tenant, sessionId) ?? (await sessions.log.last(tenant, sessionId)) !== null;
        if (known) {
          report.skipped += 1;
          continue;
        }
        try {
          // Only when the log has no record of it at all (revision 0).
          await sessions.log.publish(tenant, sessionId, await sessions.log.baseRecord(doc), { expect: 0 });
          report.imported += 1;
        } catch (err) {
          if (!isRevisionConflict(err)) throw err;
          // Written meanwhile by someone else: JetStream has it.
          log.debug({ err, file }, "Session appeared while importing; kept the stored one");
          report.skipped += 1;
        }
      }
    }
    this.#status.import = report;
    log.info({ imported: report.imported, skipped: report.skipped, corrupt: report.corrupt.length, root }, "Imported the session mirror");
    return report;
  }

  /** Follows the session log and starts the backup timer (and writes the wrapped keys, as wrapped now). */
  async start(): Promise<void> {
    await this.#writeKeys().catch((err: unknown) => this.#o.log.warn({ err }, "Cannot write the wrapped data keys to the mirror"));
    this.#watching = true;
    this.#o.sessions.onChange((tenant, sessionId, deleted) => {
      if (this.#watching) this.#dirty.set(sessionKey(tenant, sessionId), { tenant, sessionId, deleted });
    });
    if (this.#o.intervalS > 0) {
      this.#timer = setInterval(() => void this.backup(), this.#o.intervalS * 1000);
      this.#timer.unref();
    }
  }

  /** Writes every dirty session and removes deleted ones (one backup at a time). */
  backup(): Promise<void> {
    this.#running ??= this.#backup().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /** Removes a session's file at once (a delete through this instance). */
  async remove(tenant: string, sessionId: string): Promise<void> {
    await this.#unlinkBoth(tenant, sessionId);
  }

  /** Stops watching, then writes what is still dirty. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#watching = false;
    await this.#running;
    await this.backup();
  }

  /**
   * Writes the wrapped data keys beside the tenant folders (encrypted only; a new tenant's key, a
   * rotation), unless the file still holds exactly what this instance last wrote there.
   */
  async #writeKeys(): Promise<void> {
    const keyring = this.#o.sessions.log.sealer.keyring;
    if (keyring === undefined) return;
    const text = `${JSON.stringify(await keyring.exportWrapped(), null, 2)}\n`;
    if (
      text === this.#keysWritten &&
      (await access(this.keysFile).then(
        () => true,
        () => false,
      ))
    )
      return;
    await writeAtomic(this.keysFile, text);
    this.#keysWritten = text;
  }

  async #backup(): Promise<void> {
    const { sessions, log } = this.#o;
    const batch = [...this.#dirty.entries()];
    let written = 0;
    let removed = 0;
    let lastError: string | null = null;
    for (const [key, d] of batch) {
      if (this.#dirty.get(key) === d) this.#dirty.delete(key); // a change during the write marks it again
      try {
        const doc = d.deleted ? undefined : (await sessions.current(d.tenant, d.sessionId)).doc;
        if (doc === undefined) {
          await this.#unlinkBoth(d.tenant, d.sessionId);
          removed += 1;
          continue;
        }
        const text = `${JSON.stringify(doc, null, 2)}\n`;
        const sealer = sessions.log.sealer;
        if (sealer.encrypted) {
          const sealed = await sealer.seal(tenantScope(d.tenant), encoder.encode(text), sessionKey(d.tenant, d.sessionId));
          await writeAtomic(this.fileOf(d.tenant, d.sessionId, true), sealed);
          await unlink(this.fileOf(d.tenant, d.sessionId, false)).catch(() => {}); // no plaintext left behind
        } else await writeAtomic(this.fileOf(d.tenant, d.sessionId, false), text);
        written += 1;
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
        log.warn({ err, tenant: d.tenant }, "Cannot mirror a session; will retry at the next backup");
        if (!this.#dirty.has(key)) this.#dirty.set(key, d);
      }
    }
    if (written > 0) {
      await this.#writeKeys().catch((err: unknown) => {
        lastError = err instanceof Error ? err.message : String(err);
      });
    }
    this.#status = {
      ...this.#status,
      last_backup_at: new Date().toISOString(),
      last_written: written,
      last_removed: removed,
      last_error: lastError,
    };
  }
}

/** Writes a file atomically: a temporary file in the same folder, then a rename over the target. */
export async function writeAtomic(file: string, text: string | Uint8Array): Promise<void> {
  const dir = join(file, "..");
  await mkdir(dir, { recursive: true });
  const tmp = `${file}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o600 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
