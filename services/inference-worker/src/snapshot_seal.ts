/**
 * KV-state snapshots at rest (`tiers.ts`): every L2 file and L3 object is an envelope
 * (`@atlas/sealed`), compressed with `ATLAS_MEMORY_COMPRESSION` and, with a master key,
 * encrypted with the data key of scope `KV_STATE_KEY_SCOPE` (one for every worker, so a session
 * resumes on any of them), bound to the snapshot's L3 name (session and model). llama.cpp saves
 * and loads state only to and from files, so the plain state passes through a scratch file in
 * `/dev/shm` (memory) — in the L2 folder where there is none — removed as soon as it is sealed or
 * loaded.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { access, constants, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BusJetStream } from "@atlas/bus";
import { KV_STATE_KEY_SCOPE, memoryKeysBucket } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { openSealer, SealedError, type Sealer, type SealerConfig } from "@atlas/sealed";

/** Seals and opens one worker's snapshots. */
export class SnapshotSeal {
  /** Snapshots refused because they did not open (changed, or sealed with another key). */
  refused = 0;
  readonly #sealer: Sealer;
  readonly #scratch: string;
  readonly #log: Logger;

  private constructor(sealer: Sealer, scratch: string, log: Logger) {
    this.#sealer = sealer;
    this.#scratch = scratch;
    this.#log = log;
  }

  /** Loads the keys (a wrong or missing master key is an error here) and makes the scratch folder. */
  static async open(jetstream: BusJetStream, prefix: string, config: SealerConfig, l2Dir: string, log: Logger): Promise<SnapshotSeal> {
    const keys = await jetstream.kv(memoryKeysBucket(prefix), { history: 1, description: "ATLAS wrapped data keys" });
    const sealer = await openSealer(config, keys);
    const shm = await access("/dev/shm", constants.W_OK).then(
      () => true,
      () => false,
    );
    // One folder per L2 folder, emptied at start like L2 itself (a crash may have left a file).
    const scratch = shm ? join("/dev/shm", `atlas-kv-${hash(l2Dir)}`) : join(l2Dir, ".plain");
    await rm(scratch, { recursive: true, force: true });
    await mkdir(scratch, { recursive: true, mode: 0o700 });
    return new SnapshotSeal(sealer, scratch, log);
  }

  /** Whether snapshots are encrypted. */
  get encrypted(): boolean {
    return this.#sealer.encrypted;
  }

  /** Runs `save` into a scratch file, seals it to `path` (bound to `context`); the sealed bytes. */
  async save(path: string, context: string, save: (file: string) => Promise<number>): Promise<number> {
    const plain = this.#scratchOf(path);
    try {
      await save(plain);
      const sealed = await this.#sealer.seal(KV_STATE_KEY_SCOPE, await readFile(plain), context);
      await writeFile(path, sealed, { mode: 0o600 });
      return sealed.length;
    } finally {
      await rm(plain, { force: true });
    }
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
    const plain = this.#scratchOf(path);
    try {
      await writeFile(plain, state, { mode: 0o600 });
      await restore(plain);
    } finally {
      await rm(plain, { force: true });
    }
    return true;
  }

  /** Removes the scratch folder. */
  async close(): Promise<void> {
    await rm(this.#scratch, { recursive: true, force: true });
  }

  #scratchOf(path: string): string {
    return join(this.#scratch, `${hash(path)}.kv`);
  }
}

function hash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 32);
}
