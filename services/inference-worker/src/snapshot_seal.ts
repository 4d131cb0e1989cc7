/**
 * KV-state snapshots at rest (`tiers.ts`): every L2 file and L3 object is an envelope
 * (`@atlas/sealed`), compressed with `ATLAS_MEMORY_COMPRESSION` and, with a master key,
 * encrypted with the data key of scope `KV_STATE_KEY_SCOPE` (one for every worker, so a session
 * resumes on any of them), bound to the snapshot's L3 name (session and model). llama.cpp saves
 * and loads state only to and from files, so the plain state passes through a scratch file,
 * removed as soon as it is read or loaded.
 *
 * The scratch file goes to `/dev/shm` (memory) when it has room for it: its free space
 * (`statfs`) must hold the state — the largest saved so far for a save, the state itself for a
 * restore — plus those in flight there, plus `SHM_HEADROOM_BYTES`. Otherwise, and when a write
 * there runs out of space all the same (`ENOSPC`, or a file shorter than llama.cpp says it
 * wrote: it is retried once), it goes to `.plain/` in the L2 folder (mode 0700, emptied at
 * start), with one warning. Containers get a 64 MiB `/dev/shm` unless told otherwise: compose
 * sets `shm_size`, the Kubernetes manifests mount a memory `emptyDir` there.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { access, constants, mkdir, readFile, rm, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BusJetStream } from "@atlas/bus";
import { KV_STATE_KEY_SCOPE } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { SealedError, type Sealer, type SealerConfig } from "@atlas/sealed";
import { openSnapshotSealer } from "./snapshot_keys.ts";

/** Bytes left free in `/dev/shm` beyond the scratch files (other users of it, rounding). */
export const SHM_HEADROOM_BYTES = 16 * 1024 * 1024;

/** Where the scratch files go (tests point these elsewhere). */
export interface ScratchOptions {
  /** The memory folder tried first; default `/dev/shm`. */
  shmDir?: string;
  /** Bytes to leave free there; default `SHM_HEADROOM_BYTES`. */
  shmHeadroomBytes?: number;
}

/** Seals and opens one worker's snapshots. */
export class SnapshotSeal {
  /** Snapshots refused because they did not open (changed, or sealed with another key). */
  refused = 0;
  /** Scratch files that went to the L2 folder because memory had no room for them. */
  spilled = 0;
  readonly #sealer: Sealer;
  /** The scratch folder in memory; undefined when `/dev/shm` is not writable. */
  readonly #shm: string | undefined;
  /** The scratch folder in the L2 folder. */
  readonly #disk: string;
  readonly #headroom: number;
  readonly #log: Logger;
  /** Bytes of the scratch files in memory now (reserved before they are written). */
  #inShm = 0;
  /** The largest plain state saved so far: what the next save is expected to need. */
  #largest = 0;
  #files = 0;
  #warned = false;

  private constructor(sealer: Sealer, shm: string | undefined, disk: string, headroom: number, log: Logger) {
    this.#sealer = sealer;
    this.#shm = shm;
    this.#disk = disk;
    this.#headroom = headroom;
    this.#log = log;
  }

  /**
   * Loads the snapshot scope's data key (a wrong or missing master key is an error here; a key
   * store persistence has not made yet is waited for: `snapshot_keys.ts`) and makes the scratch folders.
   */
  static async open(
    jetstream: BusJetStream,
    prefix: string,
    config: SealerConfig,
    l2Dir: string,
    log: Logger,
    scratch: ScratchOptions = {},
  ): Promise<SnapshotSeal> {
    const sealer = await openSnapshotSealer(jetstream, prefix, config, log);
    const shmDir = scratch.shmDir ?? "/dev/shm";
    const writable = await access(shmDir, constants.W_OK).then(
      () => true,
      () => false,
    );
    // One folder per L2 folder, emptied at start like L2 itself (a crash may have left a file).
    const shm = writable ? join(shmDir, `atlas-kv-${hash(l2Dir)}`) : undefined;
    const disk = join(l2Dir, ".plain");
    for (const dir of shm === undefined ? [disk] : [shm, disk]) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true, mode: 0o700 });
    }
    return new SnapshotSeal(sealer, shm, disk, scratch.shmHeadroomBytes ?? SHM_HEADROOM_BYTES, log);
  }

  /** Whether snapshots are encrypted. */
  get encrypted(): boolean {
    return this.#sealer.encrypted;
  }

  /** Runs `save` into a scratch file, seals it to `path` (bound to `context`); the sealed bytes. */
  async save(path: string, context: string, save: (file: string) => Promise<number>): Promise<number> {
    const state = await this.#inScratch(path, this.#largest, async (file) => {
      const written = await save(file);
      const plain = await readFile(file);
      // llama.cpp does not check the file's close: a full tmpfs can leave it short without an error.
      if (plain.length < written) throw noSpace(`the scratch file holds ${plain.length} of the ${written} bytes written`);
      return plain;
    });
    this.#largest = Math.max(this.#largest, state.length);
    const sealed = await this.#sealer.seal(KV_STATE_KEY_SCOPE, state, context);
    await writeFile(path, sealed, { mode: 0o600 });
    return sealed.length;
  }

  /** Opens `path` into a scratch file and runs `restore` on it; false (logged) when it does not open. */
  async restore(path: string, context: string, restore: (file: string) => Promise<void>): Promise<boolean> {
    let state: Uint8Array;
    try {
      state = await this.#sealer.open(await readFile(path), context);
    } catch (err) {
      if (!(err instanceof SealedError)) throw err;
      this.refused += 1;
      this.#log.error(
        { err, reason: err.code },
        "Refused a KV snapshot that does not open (changed, or sealed with another key); recomputing",
      );
      return false;
    }
    await this.#inScratch(path, state.length, async (file) => {
      await writeFile(file, state, { mode: 0o600 });
      await restore(file);
    });
    return true;
  }

  /** Removes the scratch folders. */
  async close(): Promise<void> {
    for (const dir of [this.#shm, this.#disk]) if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }

  /**
   * Runs `use` on a scratch file for the state of `path` (`bytes` expected) — in memory when it
   * has room, else (or when it runs out of space there) in the L2 folder — and removes the file.
   */
  async #inScratch<T>(path: string, bytes: number, use: (file: string) => Promise<T>): Promise<T> {
    const name = `${hash(path)}-${++this.#files}.kv`;
    const shm = await this.#shmFor(bytes);
    if (shm === undefined) return this.#useAt(join(this.#disk, name), use);
    this.#inShm += bytes;
    try {
      return await this.#useAt(join(shm, name), use);
    } catch (err) {
      if (!isNoSpace(err)) throw err;
      this.#spill(`${shm} ran out of space (${err instanceof Error ? err.message : String(err)})`);
    } finally {
      this.#inShm -= bytes;
    }
    return this.#useAt(join(this.#disk, name), use);
  }

  async #useAt<T>(file: string, use: (file: string) => Promise<T>): Promise<T> {
    try {
      return await use(file);
    } finally {
      await rm(file, { force: true });
    }
  }

  /** The memory scratch folder when its free space holds `bytes` more; else undefined (counted, warned once). */
  async #shmFor(bytes: number): Promise<string | undefined> {
    if (this.#shm === undefined) return undefined;
    const need = bytes + this.#inShm + this.#headroom;
    const free = await statfs(this.#shm).then(
      (s) => s.bavail * s.bsize,
      () => 0,
    );
    if (free >= need) return this.#shm;
    this.#spill(`${this.#shm} has ${mib(free)} MiB free, ${mib(need)} MiB needed`);
    return undefined;
  }

  #spill(why: string): void {
    this.spilled += 1;
    if (this.#warned) return;
    this.#warned = true;
    this.#log.warn(
      { scratch: this.#disk, reason: why },
      "KV state scratch files go to the L2 folder (disk) when /dev/shm has no room: give the worker a larger /dev/shm " +
        "(compose shm_size, a memory emptyDir in Kubernetes; docs/deployment.md). Warned once",
    );
  }
}

function noSpace(message: string): Error {
  return Object.assign(new Error(`No space left: ${message}`), { code: "ENOSPC" });
}

/** A write that ran out of space: Node's `ENOSPC`, or llama.cpp's "write error: No space left on device". */
function isNoSpace(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return (err as NodeJS.ErrnoException).code === "ENOSPC" || /no space left/i.test(err.message);
}

function mib(bytes: number): number {
  return Math.round(bytes / (1024 * 1024));
}

function hash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 32);
}
