/**
 * Large payloads in the KV bucket `<prefix>_memory`: a log record whose JSON is larger than
 * {@link CHUNK_BYTES} (a whole document after a `PUT`, or one very large layer) keeps only a
 * {@link ChunkRef} and its bytes live in `c.<tenant>.<session>.<gen>.<i>`, 256 KiB each, per
 * generation `gen` = `<ms base36>-<random>` (the same keys format 1 used for large documents).
 *
 * Chunks are written before the record that points at them, so a reader never meets a record
 * whose chunks are not there yet. A generation no record points at any more (replaced,
 * compacted, deleted, or a writer that died before its record) is collected once it is older
 * than {@link ORPHAN_GRACE_MS}.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { BusError, type JetStreamManager, type KV } from "@atlas/bus";
import { sessionToken } from "@atlas/contracts";
import { z } from "zod";

/** Largest payload kept inside its record, and the size of each chunk of a larger one. */
export const CHUNK_BYTES = 256 * 1024;

/** Chunk generations younger than this are never collected (a writer may be about to point at them). */
export const ORPHAN_GRACE_MS = 10 * 60_000;

/** Where a large payload's bytes are. */
export const ChunkRef = z
  .object({
    gen: z.string().regex(/^[a-z0-9]+-[a-z0-9]+$/),
    count: z.number().int().positive(),
    sha256: z.string(),
    bytes: z.number().int().nonnegative(),
  })
  .strict();
/** Where a large payload's bytes are. */
export type ChunkRef = z.infer<typeof ChunkRef>;

/** One chunk generation found in the bucket. */
export interface Generation {
  tenant: string;
  token: string;
  gen: string;
}

/** Chunked payloads of every session, in one KV bucket. */
export class Chunks {
  readonly kv: KV;
  readonly #jsm: JetStreamManager;
  readonly #bucket: string;

  constructor(options: { kv: KV; jsm: JetStreamManager; bucket: string }) {
    this.kv = options.kv;
    this.#jsm = options.jsm;
    this.#bucket = options.bucket;
  }

  /** Stores `bytes` as a new generation of chunks of a session. */
  async put(tenant: string, sessionId: string, bytes: Uint8Array): Promise<ChunkRef> {
    const gen = `${Date.now().toString(36)}-${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
    const count = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
    const token = sessionToken(sessionId);
    try {
      await Promise.all(
        Array.from({ length: count }, (_, i) =>
          this.kv.put(`c.${tenant}.${token}.${gen}.${i}`, bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES)),
        ),
      );
    } catch (err) {
      await this.purge(tenant, sessionId, gen).catch(() => {});
      throw err;
    }
    return { gen, count, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
  }

  /** The bytes of a chunked payload; undefined when a chunk is gone (its record was superseded meanwhile). */
  async read(tenant: string, sessionId: string, ref: ChunkRef): Promise<Uint8Array | undefined> {
    const token = sessionToken(sessionId);
    const entries = await Promise.all(Array.from({ length: ref.count }, (_, i) => this.kv.get(`c.${tenant}.${token}.${ref.gen}.${i}`)));
    const out = new Uint8Array(entries.reduce((s, e) => s + (e?.value.length ?? 0), 0));
    let at = 0;
    for (const e of entries) {
      if (e === null || e.operation !== "PUT") return undefined;
      out.set(e.value, at);
      at += e.value.length;
    }
    if (createHash("sha256").update(out).digest("hex") !== ref.sha256) {
      throw new BusError("internal", `Session "${sessionId}" of tenant "${tenant}" is corrupt: checksum mismatch`, { retryable: false });
    }
    return out;
  }

  /** Removes one generation (one stream purge by subject: no per-key markers). */
  purge(tenant: string, sessionId: string, gen: string): Promise<void> {
    return this.#purgeSubject(`c.${tenant}.${sessionToken(sessionId)}.${gen}.*`);
  }

  /** Removes every generation of a session born before `before` (ms). */
  async purgeSession(tenant: string, sessionId: string, before: number): Promise<void> {
    const token = sessionToken(sessionId);
    for (const g of await this.generations(`c.${tenant}.${token}.>`)) {
      if (bornAt(g.gen) < before) await this.#purgeSubject(`c.${tenant}.${token}.${g.gen}.*`);
    }
  }

  /** Every chunk generation under a key filter. */
  async generations(filter = "c.>"): Promise<Generation[]> {
    const found = new Map<string, Generation>();
    for await (const key of await this.kv.keys(filter)) {
      const m = /^c\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([a-z0-9]+-[a-z0-9]+)\.\d+$/.exec(key);
      if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) continue;
      found.set(`${m[1]}.${m[2]}.${m[3]}`, { tenant: m[1], token: m[2], gen: m[3] });
    }
    return [...found.values()];
  }

  /**
   * Purges generations older than the grace period that `live` says no record points at
   * (`live` gets the generations of one session and returns those still referenced).
   */
  async collect(live: (tenant: string, token: string) => Promise<Set<string>>, now = Date.now()): Promise<number> {
    const bySession = new Map<string, Generation[]>();
    for (const g of await this.generations()) {
      if (now - bornAt(g.gen) < ORPHAN_GRACE_MS) continue;
      const k = `${g.tenant}.${g.token}`;
      bySession.set(k, [...(bySession.get(k) ?? []), g]);
    }
    let purged = 0;
    for (const gens of bySession.values()) {
      const first = gens[0] as Generation;
      const referenced = await live(first.tenant, first.token);
      for (const g of gens) {
        if (referenced.has(g.gen)) continue;
        await this.#purgeSubject(`c.${g.tenant}.${g.token}.${g.gen}.*`);
        purged += 1;
      }
    }
    return purged;
  }

  async #purgeSubject(keyFilter: string): Promise<void> {
    await this.#jsm.streams.purge(`KV_${this.#bucket}`, { filter: `$KV.${this.#bucket}.${keyFilter}` });
  }
}

/** When a generation was made (ms), from its name; NaN-safe (0 for a name that is not one). */
export function bornAt(gen: string): number {
  const t = Number.parseInt(gen.split("-")[0] ?? "", 36);
  return Number.isFinite(t) ? t : 0;
}
