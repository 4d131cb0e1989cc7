/**
 * The worker's KV tiers below L1 (its slots):
 *
 * - **L2**: snapshot files on this worker's disk (`sequence.saveStateToFile`), written when a
 *   slot is handed from one session to another, with a byte budget (`ATLAS_L2_BUDGET_MB`);
 *   a snapshot leaves (promoted to L3 on its way out) by the eviction strategy of the session
 *   that needs the room (`GenerateRequest.cache_strategy`: `lru`, `lfu`, `adaptive`, from
 *   `@atlas/cache-policy`; sizes are the snapshot files' bytes, costs their tokens).
 * - **L3**: the JetStream object store, cluster-wide, keyed by session *and* model fingerprint,
 *   so a session resumes on any worker with the same model and never into another model;
 *   filled on drain, on shutdown (SIGTERM: the slots' sessions and L2, dearest first, within
 *   `ATLAS_SHUTDOWN_GRACE_MS`), on L2 eviction and every `ATLAS_AUTO_SAVE_INTERVAL` seconds. When
 *   the budget (`ATLAS_L3_BUDGET_MB`) is full, objects leave by the strategy of the session being
 *   uploaded: the store's objects (save time, bytes, tokens, how often saved) are replayed into
 *   that policy, which picks the victims.
 *
 * At rest (`atRest`), snapshots are sealed — compressed, encrypted with a master key — by
 * `snapshot_seal.ts`; one that does not open is refused, dropped from its tier and recomputed.
 *
 * A snapshot is restored only when that is cheaper than evaluating its tokens again: the
 * restore's estimated time (fixed cost + bytes ÷ measured bandwidth) is compared with the
 * snapshot's tokens × the measured prefill time per token.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type BusJetStream, type MsgHdrs, natsHeaders, type ObjectStore, raceAbort } from "@atlas/bus";
import { type CachePolicy, createPolicy } from "@atlas/cache-policy";
import { type CacheStrategy, type CacheTier, DEFAULT_CACHE_STRATEGY, l3Bucket } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import type { SealerConfig } from "@atlas/sealed";
import type { SlotAccess } from "./engine.ts";
import { SnapshotSeal } from "./snapshot_seal.ts";

/** One L2 snapshot. */
interface L2Entry {
  session: string;
  path: string;
  bytes: number;
  tokens: number;
  inL3: boolean;
  /** The eviction strategy the session last named (default `adaptive`). */
  strategy: CacheStrategy;
}

/** Longest an L3 read (an object's info, its bytes) may take before the request recomputes instead. */
const L3_READ_MS = 5000;

/** Saves an L3 object's replay counts at most (its frequency, as the policies see it). */
const MAX_REPLAYED_SAVES = 16;

/** Options for {@link KvTiers.open}. */
export interface KvTiersOptions {
  /** Where the L3 object store lives (the bus's JetStream). */
  jetstream: BusJetStream;
  prefix: string;
  workerId: string;
  fingerprint: string;
  dir: string;
  l2BudgetBytes: number;
  l3BudgetBytes: number;
  /** `cost` (default): restore only when cheaper than recomputing; `always`; `never`. */
  restore?: "cost" | "always" | "never";
  log: Logger;
  /** Compression and encryption at rest (the worker's configuration); left out: snapshots stay as llama.cpp writes them. */
  atRest?: SealerConfig;
}

/** Running estimates that decide between restoring and recomputing. */
class CostModel {
  prefillMsPerToken = 0.05;
  l2BytesPerMs = 500_000; // ~0.5 GB/s from the local disk
  l3BytesPerMs = 50_000; // ~50 MB/s from the object store
  readonly fixedMs = { l2: 0.5, l3: 3 };

  observePrefill(tokens: number, ms: number): void {
    if (tokens < 8 || ms <= 0) return;
    this.prefillMsPerToken = 0.8 * this.prefillMsPerToken + 0.2 * (ms / tokens);
  }
  observeRestore(tier: "l2" | "l3", bytes: number, ms: number): void {
    if (ms <= 0 || bytes < 4096) return;
    const rate = bytes / ms;
    if (tier === "l2") this.l2BytesPerMs = 0.8 * this.l2BytesPerMs + 0.2 * rate;
    else this.l3BytesPerMs = 0.8 * this.l3BytesPerMs + 0.2 * rate;
  }
  mode: "cost" | "always" | "never" = "cost";

  worthRestoring(tier: "l2" | "l3", bytes: number, tokens: number): boolean {
    if (this.mode !== "cost") return this.mode === "always";
    const restoreMs = this.fixedMs[tier] + bytes / (tier === "l2" ? this.l2BytesPerMs : this.l3BytesPerMs);
    return restoreMs < tokens * this.prefillMsPerToken;
  }
}

/** The L2 and L3 tiers of one worker. */
export class KvTiers {
  readonly cost = new CostModel();
  readonly #l2 = new Map<string, L2Entry>();
  readonly #o: KvTiersOptions;
  readonly #l3: ObjectStore;
  readonly #atRest: SnapshotSeal | undefined;
  /** The L2 index under every strategy (each sees every use), so any request can pick victims by its own. */
  readonly #policies: Record<CacheStrategy, CachePolicy>;
  /** L2 evictions and their L3 uploads, one after the other (in the order the snapshots came). */
  #evicting: Promise<void> = Promise.resolve();
  #files = 0;

  private constructor(options: KvTiersOptions, l3: ObjectStore, atRest: SnapshotSeal | undefined) {
    this.#o = options;
    this.#l3 = l3;
    this.#atRest = atRest;
    this.cost.mode = options.restore ?? "cost";
    this.#policies = policiesFor(options.l2BudgetBytes);
  }

  /** Opens the tiers (creates the L2 folder and the L3 object store). */
  static async open(options: KvTiersOptions): Promise<KvTiers> {
    await rm(options.dir, { recursive: true, force: true }); // snapshots of a previous run are not trusted
    await mkdir(options.dir, { recursive: true });
    const l3 = await options.jetstream.objectStore(l3Bucket(options.prefix));
    const o = options; // a wrong or missing master key stops the worker's start here, with the reason
    const atRest = o.atRest === undefined ? undefined : await SnapshotSeal.open(o.jetstream, o.prefix, o.atRest, o.dir, o.log);
    return new KvTiers(options, l3, atRest);
  }

  /** Sealing at rest (undefined without `atRest`): encrypted or not, refused snapshots, `close()` at stop. */
  get atRest(): SnapshotSeal | undefined {
    return this.#atRest;
  }

  /** Runs `save` (llama.cpp writing a snapshot file) and leaves the snapshot at `path`, sealed when at rest; its bytes. */
  #saveTo(path: string, session: string, save: (file: string) => Promise<number>): Promise<number> {
    return this.#atRest === undefined ? save(path) : this.#atRest.save(path, l3Name(session, this.#o.fingerprint), save);
  }

  /** Loads the snapshot at `path` into the slot; false when it was refused (the caller recomputes). */
  async #restoreFrom(slot: SlotAccess, path: string, session: string): Promise<boolean> {
    if (this.#atRest !== undefined) return this.#atRest.restore(path, l3Name(session, this.#o.fingerprint), (file) => slot.restore(file));
    await slot.restore(path);
    return true;
  }

  /** L2 contents, for heartbeats. */
  l2Entries(): { session: string; bytes: number; tokens: number }[] {
    return [...this.#l2.values()].map((e) => ({ session: e.session, bytes: e.bytes, tokens: e.tokens }));
  }

  /** Bytes held in L2. */
  get l2Bytes(): number {
    let n = 0;
    for (const e of this.#l2.values()) n += e.bytes;
    return n;
  }

  /**
   * Runs with the slot held, before the prompt is evaluated: snapshots the session the slot
   * held (if it is another one) to L2, then brings the request's session in from L2 or L3 when
   * that beats recomputing. Returns the tier the request's state came from, or undefined when
   * the slot already held it (or nothing was restored). A `fresh` session (nothing stored yet)
   * is not looked for. Once `signal` aborts (the request is cancelled) nothing more is fetched or
   * restored: the caller sees the cancellation.
   */
  async prepare(
    slot: SlotAccess,
    current: { session: string | null; strategy?: CacheStrategy | undefined },
    wanted: string | null,
    options: { fresh?: boolean; strategy?: CacheStrategy | undefined; signal?: AbortSignal } = {},
  ): Promise<CacheTier | undefined> {
    const { signal } = options;
    const cancelled = () => signal?.aborted === true;
    const held = current.session;
    if (held !== null && held !== wanted && slot.tokens > 0) await this.#snapshot(slot, held, current.strategy ?? DEFAULT_CACHE_STRATEGY);
    if (wanted === null || held === wanted || options.fresh === true || cancelled()) return undefined;
    const strategy = options.strategy ?? DEFAULT_CACHE_STRATEGY;
    const local = this.#l2.get(wanted);
    const name = l3Name(wanted, this.#o.fingerprint);
    // L3 reads have a deadline of their own: a JetStream that is electing a stream leader (a NATS
    // node lost) can leave a read unanswered, and recomputing beats waiting (test/cluster_nats.test.ts).
    const deadline = (ms: number) => (signal === undefined ? AbortSignal.timeout(ms) : AbortSignal.any([signal, AbortSignal.timeout(ms)]));
    const found = await raceAbort(this.#l3.info(name), deadline(L3_READ_MS)).catch(() => null);
    const info = found === null || found.deleted ? null : found;
    const l3Tokens = Number(info === null ? 0 : (headerOf(info, "Atlas-Tokens") ?? 0));
    // A local snapshot can be older than L3's: the session went on on another worker since.
    if (local !== undefined && local.tokens >= l3Tokens && this.cost.worthRestoring("l2", local.bytes, local.tokens)) {
      const t0 = performance.now();
      if (await this.#restoreFrom(slot, local.path, wanted)) {
        this.cost.observeRestore("l2", local.bytes, performance.now() - t0);
        local.strategy = strategy;
        this.#touch(local); // a use
        return "l2";
      }
      await this.#dropL2(local);
    }
    if (info === null || !this.cost.worthRestoring("l3", info.size, l3Tokens) || cancelled()) return undefined;
    const t0 = performance.now();
    const data = await raceAbort(this.#l3.getBlob(name), deadline(L3_READ_MS)).catch(() => null);
    if (data === null || cancelled()) return undefined;
    const path = this.#path(wanted);
    await writeFile(path, data, { mode: 0o600 });
    if (!(await this.#restoreFrom(slot, path, wanted))) {
      await rm(path, { force: true });
      await this.#l3.delete(name).catch(() => {});
      return undefined;
    }
    this.cost.observeRestore("l3", data.length, performance.now() - t0);
    this.#put({ session: wanted, path, bytes: data.length, tokens: slot.tokens, inL3: true, strategy });
    return "l3";
  }

  /** Snapshots a resident slot (drain, shutdown) holding `session`, which last named `strategy`. */
  async snapshotSlot(
    save: (path: string) => Promise<{ bytes: number; tokens: number }>,
    session: string,
    strategy: CacheStrategy = DEFAULT_CACHE_STRATEGY,
  ): Promise<void> {
    const path = this.#path(session);
    let tokens = 0;
    const bytes = await this.#saveTo(path, session, async (file) => {
      const r = await save(file);
      tokens = r.tokens;
      return r.bytes;
    });
    this.#put({ session, path, bytes, tokens, inL3: false, strategy });
  }

  /**
   * Uploads every L2 snapshot that L3 does not have yet (auto-save, drain, shutdown), the ones
   * with the most tokens (the dearest to recompute) first; stops between two uploads once
   * `signal` aborts. Returns how many it uploaded.
   */
  async promoteAll(signal?: AbortSignal): Promise<number> {
    let n = 0;
    const waiting = [...this.#l2.values()].filter((e) => !e.inL3).sort((a, b) => b.tokens - a.tokens);
    for (const e of waiting) {
      if (signal?.aborted) break;
      if (e.inL3 || this.#l2.get(e.session) !== e) continue;
      await this.#upload(e);
      n += 1;
    }
    return n;
  }

  /** Uploads one session's L2 snapshot to L3 unless L3 has it already. */
  async promote(session: string): Promise<void> {
    const e = this.#l2.get(session);
    if (e !== undefined && !e.inL3) await this.#upload(e);
  }

  /** Forgets a session in L2 and L3 (it was deleted). */
  async forget(session: string): Promise<void> {
    const e = this.#l2.get(session);
    if (e !== undefined) await this.#dropL2(e);
    await this.#l3.delete(l3Name(session, this.#o.fingerprint)).catch(() => {});
  }

  /** Removes one L2 snapshot (forgotten, or refused). */
  async #dropL2(e: L2Entry): Promise<void> {
    if (this.#l2.get(e.session) === e) {
      this.#l2.delete(e.session);
      for (const p of Object.values(this.#policies)) p.remove(e.session);
    }
    await rm(e.path, { force: true });
  }

  async #snapshot(slot: SlotAccess, session: string, strategy: CacheStrategy): Promise<void> {
    const path = this.#path(session);
    const bytes = await this.#saveTo(path, session, (file) => slot.save(file));
    this.#put({ session, path, bytes, tokens: slot.tokens, inL3: false, strategy });
  }

  #put(entry: L2Entry): void {
    this.#l2.set(entry.session, entry);
    this.#touch(entry);
    this.#evicting = this.#evicting
      .then(() => this.#enforceL2Budget(entry))
      .catch((err: unknown) => this.#o.log.warn({ err }, "L2 budget enforcement failed"));
  }

  /** Resolves once every L2 eviction queued so far, with its upload to L3, is done. */
  settled(): Promise<void> {
    return this.#evicting;
  }

  /** A use of an L2 snapshot, told to every strategy's index. */
  #touch(e: L2Entry): void {
    for (const p of Object.values(this.#policies)) p.touch(e.session, e.bytes, { cost: Math.max(1, e.tokens) });
  }

  /**
   * Makes room for `incoming`: snapshots leave L2 as its session's strategy chooses (never
   * `incoming` itself while another can go), promoted to L3 on their way out.
   */
  async #enforceL2Budget(incoming: L2Entry): Promise<void> {
    const policy = this.#policies[incoming.strategy];
    while (this.l2Bytes > this.#o.l2BudgetBytes && this.#l2.size > 0) {
      const key = policy.victim({ incoming: incoming.session }) ?? (this.#l2.has(incoming.session) ? incoming.session : undefined);
      const victim = key === undefined ? undefined : this.#l2.get(key);
      if (victim === undefined) break;
      this.#l2.delete(victim.session);
      for (const p of Object.values(this.#policies)) p.evict(victim.session);
      if (!victim.inL3) await this.#upload(victim).catch((err: unknown) => this.#o.log.warn({ err }, "L3 upload failed"));
      await rm(victim.path, { force: true });
    }
  }

  async #upload(e: L2Entry): Promise<void> {
    const data = await readFile(e.path).catch(() => null);
    if (data === null) return;
    const name = l3Name(e.session, this.#o.fingerprint);
    await this.#makeRoom(name, data.length, e.strategy);
    const before = await this.#l3.info(name).catch(() => null);
    const saves = (before === null || before.deleted ? 0 : Number(headerOf(before, "Atlas-Saves") ?? 1)) + 1;
    await this.#l3.putBlob(
      {
        name,
        description: `KV state of a session for model ${this.#o.fingerprint.slice(0, 16)}`,
        headers: objectHeaders(e.tokens, saves),
      },
      data,
    );
    e.inL3 = true;
  }

  /**
   * Makes room in L3 for `bytes` of `incoming` when the cluster-wide budget would overflow: the
   * store's objects are replayed into a fresh policy of `strategy` (oldest save first, each
   * touched as often as it was saved, up to 16, with its bytes and tokens), which picks the
   * victims. Under `lru` this is oldest first, as before strategies applied to L3.
   */
  async #makeRoom(incoming: string, bytes: number, strategy: CacheStrategy): Promise<void> {
    const status = await this.#l3.status();
    let used = status.size;
    if (used + bytes <= this.#o.l3BudgetBytes) return;
    const listed = (await this.#l3.list()).filter((o) => !o.deleted);
    // The incoming session's own object is replaced, not kept beside the new one.
    used -= listed.find((o) => o.name === incoming)?.size ?? 0;
    if (used + bytes <= this.#o.l3BudgetBytes) return;
    const objects = listed.filter((o) => o.name !== incoming).sort((a, b) => a.mtime.localeCompare(b.mtime));
    const policy = createPolicy(strategy, { budgetBytes: Math.max(1, this.#o.l3BudgetBytes) });
    const sizes = new Map<string, number>();
    for (const o of objects) {
      const saves = Math.min(MAX_REPLAYED_SAVES, Math.max(1, Number(headerOf(o, "Atlas-Saves") ?? 1) || 1));
      const cost = Math.max(1, Number(headerOf(o, "Atlas-Tokens") ?? 1) || 1);
      for (let i = 0; i < saves; i++) policy.touch(o.name, o.size, { cost });
      sizes.set(o.name, o.size);
    }
    while (used + bytes > this.#o.l3BudgetBytes) {
      const victim = policy.victim();
      if (victim === undefined) break;
      policy.evict(victim);
      await this.#l3.delete(victim).catch(() => {});
      used -= sizes.get(victim) ?? 0;
    }
  }

  /**
   * A new file for a snapshot of `session`: every snapshot gets its own, so removing an evicted
   * one (after its upload) can never delete a newer snapshot of the same session.
   */
  #path(session: string): string {
    return join(this.#o.dir, `${hashOf(session)}.${++this.#files}.kv`);
  }
}

/** A header of an L3 object: `info()` gives `MsgHdrs`, `list()` the plain record of the stored metadata. */
function headerOf(o: { headers?: unknown }, name: string): string | undefined {
  const h = o.headers;
  if (h === undefined || h === null) return undefined;
  if (typeof (h as MsgHdrs).get === "function") return (h as MsgHdrs).get(name) || undefined;
  return (h as Record<string, string[] | undefined>)[name]?.[0];
}

/** An L3 object's headers: the tokens it holds, and how often the session was saved there. */
function objectHeaders(tokens: number, saves: number): MsgHdrs {
  const h = natsHeaders();
  h.set("Atlas-Tokens", String(tokens));
  h.set("Atlas-Saves", String(saves));
  return h;
}

/** One index of L2 per strategy, sized by the tier's budget. */
function policiesFor(budgetBytes: number): Record<CacheStrategy, CachePolicy> {
  const budget = { budgetBytes: Math.max(1, budgetBytes) };
  return { lru: createPolicy("lru", budget), lfu: createPolicy("lfu", budget), adaptive: createPolicy("adaptive", budget) };
}

function hashOf(session: string): string {
  return createHash("sha256").update(session).digest("hex").slice(0, 40);
}

/** An L3 object's name: the session's hash and the model's fingerprint. */
export function l3Name(session: string, fingerprint: string): string {
  return `${hashOf(session)}.${fingerprint.slice(0, 16)}`;
}
