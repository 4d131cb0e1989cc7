/**
 * Property test of the pool, checked against evidence the pool does not produce itself:
 * simulated workers that fence as `SlotGuard` (inference worker) does and keep each slot's
 * history of generations, the clients' leases, the KV store as the leader's write-behind journal
 * leaves it, and a model of the leader's lease table kept by the rules the pool documents. Runs
 * mix heartbeats, acquire (some as slot credits), generation start and end (with or without a
 * release; a credit's end may keep it for its holder, who starts it again), credits given back
 * by the worker (idle) or asked back by the pool (revoke), renew, calls with a wrong token,
 * time, worker partition, crash and revival, and leader failover (possibly mid-flush). A failure
 * message starts with the name of the invariant it breaks.
 */
import type { Heartbeat } from "@atlas/contracts";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type LeaseRecord, Pool } from "./pool.ts";

const WORKERS = ["w1", "w2", "w3"];
const SLOTS = 2;
const TIMEOUT = 3000; // heartbeat timeout
const BLOCK = 8; // fencing tokens reserved per persisted block

/** Fails the run with `[tag] detail`; the tag names the invariant. */
function check(ok: boolean, tag: string, detail: () => string): asserts ok {
  if (!ok) throw new Error(`[${tag}] ${detail()}`);
}

/** A granted lease as its holder knows it; `term` numbers the leader that granted it. */
interface Tracked {
  readonly id: string;
  readonly token: number;
  readonly worker: string;
  readonly slot: number;
  readonly session: string | null;
  readonly term: number;
  /** Granted as a slot credit: its holder may ask the worker to keep it at the end. */
  readonly credit: boolean;
  started: boolean;
  /** Generations started under it (more than one: a credit used again). */
  uses: number;
}

/** One generation on one slot: from its admission to its end (steps), and what ended it. */
interface Run {
  readonly lease: Tracked;
  readonly start: number;
  end: number | null;
  how: "done" | "aborted" | "takeover" | "crash" | null;
}

/** A worker's slots, fenced as `SlotGuard` fences them, with every slot's history of generations. */
class SimWorker {
  readonly fencing = Array.from({ length: SLOTS }, () => 0);
  /** Highest token each slot ever admitted, across restarts (a restart resets `fencing`). */
  readonly seenEver = Array.from({ length: SLOTS }, () => 0);
  readonly running: (Run | null)[] = Array.from({ length: SLOTS }, () => null);
  readonly session: (string | null)[] = Array.from({ length: SLOTS }, () => null);
  readonly history: Run[][] = Array.from({ length: SLOTS }, () => []);
  /** Per slot: the highest token whose lease ended here (`SlotGuard`'s refusal of an ended lease). */
  readonly ended = Array.from({ length: SLOTS }, () => 0);
  /** Per slot: the token of a credit kept idle for its holder, or null. */
  readonly held: (number | null)[] = Array.from({ length: SLOTS }, () => null);
  /** Per slot: the highest token the pool asked back. */
  readonly revoked = Array.from({ length: SLOTS }, () => 0);
  /** Heartbeats and control messages get through (false: partitioned from the scheduler). */
  reachable = true;
  constructor(readonly id: string) {}

  /** `SlotGuard.admit`: refuses a token below the slot's newest or one that ended, else ends what runs there (takeover). */
  admit(lease: Tracked, step: number): { admitted: boolean; tookOver: Run | null } {
    const s = lease.slot;
    if (lease.token < (this.fencing[s] ?? 0) || lease.token <= (this.ended[s] ?? 0)) return { admitted: false, tookOver: null };
    const held = this.held[s] ?? null;
    if (held !== null && held < lease.token) this.ended[s] = Math.max(this.ended[s] ?? 0, held);
    this.held[s] = null;
    const prev = this.running[s] ?? null;
    if (prev !== null) this.#end(prev, step, "takeover");
    this.fencing[s] = lease.token;
    this.seenEver[s] = Math.max(this.seenEver[s] ?? 0, lease.token);
    const run: Run = { lease, start: step, end: null, how: null };
    this.running[s] = run;
    this.history[s]?.push(run);
    this.session[s] = lease.session;
    return { admitted: true, tookOver: prev };
  }

  /**
   * The lease's generation finished by itself (`SlotGuard.settle`): a credit asked to be kept,
   * neither revoked nor taken over, stays held for its holder (true); else the lease has ended.
   */
  finish(lease: Tracked, step: number, keep: boolean): boolean {
    const s = lease.slot;
    const run = this.running[s];
    if (run?.lease !== lease) return false;
    this.#end(run, step, "done");
    if (keep && lease.credit && this.fencing[s] === lease.token && (this.revoked[s] ?? 0) < lease.token && this.held[s] === null) {
      this.held[s] = lease.token;
      return true;
    }
    this.ended[s] = Math.max(this.ended[s] ?? 0, lease.token);
    return false;
  }

  /** Gives back the credit held idle on `slot` at `token` or older; returns its token (to release), or null. */
  giveBack(slot: number, token: number): number | null {
    const held = this.held[slot] ?? null;
    if (held === null || held > token) return null;
    this.held[slot] = null;
    this.ended[slot] = Math.max(this.ended[slot] ?? 0, held);
    return held;
  }

  /** `SlotGuard.revoke`: the pool asks the credit at `token` back; given back at once if idle. */
  revoke(slot: number, token: number): number | null {
    this.revoked[slot] = Math.max(this.revoked[slot] ?? 0, token);
    return this.giveBack(slot, token);
  }

  /** `SlotGuard.abort`: the scheduler reclaimed a lease; stops what runs under `token` or older. */
  abort(slot: number, token: number, step: number): void {
    const run = this.running[slot];
    if (run !== null && run !== undefined && run.lease.token <= token) this.#end(run, step, "aborted");
  }

  /** The process restarts: every generation ends; fencing and sessions start from scratch. */
  crash(step: number): void {
    for (let s = 0; s < SLOTS; s++) {
      const run = this.running[s];
      if (run !== null && run !== undefined) this.#end(run, step, "crash");
      this.fencing[s] = 0;
      this.session[s] = null;
      this.ended[s] = 0;
      this.held[s] = null;
      this.revoked[s] = 0;
    }
  }

  /** The worker's report: a slot is busy while an admitted generation has not ended. */
  heartbeat(now: number): Heartbeat {
    const slots = this.fencing.map((f, slot) => {
      const session = this.session[slot] ?? null;
      const held = this.held[slot] !== null;
      return { slot, busy: this.running[slot] !== null, held, tokens: session === null ? 0 : 10, session, fencing_token: f };
    });
    return {
      worker_id: this.id,
      model: "m",
      fingerprint: "f",
      ctx_size: 1024,
      slots,
      l2: [],
      draining: false,
      interval_ms: 1000,
      sent_at: now,
    };
  }

  /** A slot's history (`lease#token[start,end how)`), for failure messages. */
  describe(slot: number): string {
    return (this.history[slot] ?? []).map((r) => `${r.lease.id}#${r.lease.token}[${r.start},${r.end ?? "open"} ${r.how ?? ""})`).join(" ");
  }

  #end(run: Run, step: number, how: NonNullable<Run["how"]>): void {
    run.end = step;
    run.how = how;
    this.running[run.lease.slot] = null;
  }
}

/** A lease in the model of the leader's table; `ttl` is what a heartbeat showing it running extends it by. */
interface Entry {
  readonly t: Tracked;
  expiry: number;
  readonly ttl: number;
}

type Cmd =
  | { t: "hb"; w: number }
  | { t: "acquire"; session: number | null; count: number; ttl: number; credit: boolean }
  | { t: "start"; i: number }
  | { t: "finish"; i: number; release: boolean; keep: boolean }
  | { t: "giveBack"; i: number; release: boolean }
  | { t: "revoke"; release: boolean }
  | { t: "renew"; i: number; ttl: number }
  | { t: "badToken"; i: number; delta: number }
  | { t: "advance"; ms: number }
  | { t: "kill" | "revive" | "crash"; w: number }
  | { t: "failover"; landed: number; order: number; heartbeatsFirst: boolean };

const w = fc.nat(WORKERS.length - 1);
const i = fc.nat(30);
const ttl = fc.constantFrom(1000, 3000, 20_000);
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant("hb" as const), w }) },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("acquire" as const),
      session: fc.option(fc.nat(3), { nil: null }),
      count: fc.nat({ max: 2 }).map((n) => n + 1),
      ttl,
      credit: fc.boolean(),
    }),
  },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("start" as const), i }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("finish" as const), i, release: fc.boolean(), keep: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("giveBack" as const), i, release: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("revoke" as const), release: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("renew" as const), i, ttl }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("badToken" as const), i, delta: fc.constantFrom(-1, 1, 1000) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("advance" as const),
      ms: fc.oneof(fc.integer({ min: 1, max: 4000 }), fc.constantFrom(1000, 3000)), // also exactly a TTL, the timeout
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constantFrom("kill" as const, "revive" as const, "crash" as const), w }) },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("failover" as const), landed: fc.nat(), order: fc.nat(), heartbeatsFirst: fc.boolean() }),
  },
);

/** How often each checked situation occurred over all runs: a check never reached proves nothing. */
const seen = {
  grants: 0,
  mustGrant: 0,
  refused: 0,
  takeovers: 0,
  aborts: 0,
  revoked: 0,
  hbEnded: 0,
  restored: 0,
  rivals: 0,
  badTokens: 0,
  creditsKept: 0,
  creditsReused: 0,
  creditsGivenBack: 0,
  creditsAskedBack: 0,
};

/**
 * One run: the pool under test, the workers, the clients' leases, KV (the journal's pending
 * changes land at each tick's flush, or only some of them when the leader dies mid-flush), and
 * the model of the leader's lease table (`table`, insertion-ordered like the pool's; `bound`:
 * which lease each slot is bound to; `issued`: the highest token bound to each slot) and of what
 * the leader heard from each worker (`heard`; `busy`: the token a slot was last reported busy
 * under, or null).
 */
class Sim {
  now = 0;
  step = 0;
  term = 0;
  #ids = 0;
  reserved = BLOCK; // persisted end of the newest reserved fencing block
  pool = this.#newPool(0);
  readonly workers = WORKERS.map((id) => new SimWorker(id));
  readonly tracked = new Map<string, Tracked>();
  /** Leases the clients still hold (they learn nothing of expiry, revocation or failover). */
  readonly held: Tracked[] = [];
  readonly kv = new Map<string, LeaseRecord>();
  pending = new Map<string, LeaseRecord | null>();
  table = new Map<string, Entry>();
  bound = new Map<string, string>();
  issued = new Map<string, number>();
  heard = new Map<string, { lastSeen: number; alive: boolean; busy: (number | null)[] }>();
  /** Slots where a lease of each session was granted: the only places it can be resident. */
  readonly homes = new Map<string, Set<string>>();
  maxGranted = 0;
  grants = 0;
  mustGrant = 0;

  #newPool(fencingStart: number): Pool {
    return new Pool({ heartbeatTimeoutMs: TIMEOUT, fencingStart, newId: () => `L${++this.#ids}` });
  }

  #worker(id: string): SimWorker {
    const found = this.workers.find((x) => x.id === id);
    if (found === undefined) throw new Error(`unknown worker ${id}`);
    return found;
  }

  /** The model's table lease on a slot, if any. */
  #on(key: string): Entry | undefined {
    for (const e of this.table.values()) if (`${e.t.worker}/${e.t.slot}` === key) return e;
    return undefined;
  }

  /** The slot is bound to the lease. */
  #bind(key: string, t: Tracked): void {
    this.bound.set(key, t.id);
    this.issued.set(key, Math.max(this.issued.get(key) ?? 0, t.token));
  }

  /** The lease leaves the leader's table (and, unless `quiet`, the journal deletes its record). */
  #drop(id: string, quiet = false): void {
    const e = this.table.get(id);
    if (e === undefined) return;
    this.table.delete(id);
    if (this.bound.get(`${e.t.worker}/${e.t.slot}`) === id) this.bound.delete(`${e.t.worker}/${e.t.slot}`);
    if (!quiet) this.pending.set(id, null);
  }

  /** A heartbeat reaches the leader if the worker is reachable; the model applies the same rules. */
  deliver(sw: SimWorker): void {
    if (!sw.reachable) return;
    const hb = sw.heartbeat(this.now);
    const removed = this.pool.heartbeat(hb, this.now).flatMap((a) => (a.type === "lease-removed" ? [a.lease_id] : []));
    const ended: string[] = [];
    for (const r of hb.slots) {
      const key = `${sw.id}/${r.slot}`;
      const first = this.#on(key); // a worker the leader hears first: its slots bind their table lease
      if (!this.heard.has(sw.id) && first !== undefined && !this.bound.has(key)) this.#bind(key, first.t);
      const e = this.table.get(this.bound.get(key) ?? "");
      // Idle (and not held) at or past its token: it ran and is over. Busy, or held for its
      // holder, at exactly its token: it is running or kept as a credit.
      const held = r.busy || r.held === true;
      if (e !== undefined && !held && r.fencing_token >= e.t.token) ended.push(e.t.id);
      else if (e !== undefined && held && r.fencing_token === e.t.token) e.expiry = Math.max(e.expiry, this.now + e.ttl);
    }
    for (const id of ended) this.#drop(id);
    seen.hbEnded += ended.length;
    check(removed.join() === ended.join(), "heartbeat", () => `${sw.id}'s heartbeat ended [${removed}], the rules say [${ended}]`);
    this.heard.set(sw.id, {
      lastSeen: this.now,
      alive: true,
      busy: hb.slots.map((r) => (r.busy || r.held === true ? r.fencing_token : null)),
    });
  }

  acquire(c: Extract<Cmd, { t: "acquire" }>): void {
    if (this.pool.fencingToken + c.count > this.reserved) this.reserved += BLOCK; // as service.ts reserves
    const session = c.session === null ? null : `t/s${c.session}`;
    // Free for certain: its worker heard within the timeout, no lease bound, last reported idle.
    const keys = (id: string) => [...Array(SLOTS).keys()].map((s) => ({ key: `${id}/${s}`, busy: this.heard.get(id)?.busy[s] !== null }));
    const alive = [...this.heard].filter(([, h]) => h.alive).map(([id]) => id);
    const free = alive.flatMap(keys).flatMap((k) => (k.busy || this.bound.has(k.key) ? [] : [k.key]));
    // Where the session may be resident, that slot must be free too, or the pool rightly waits.
    const homes = [...(this.homes.get(session ?? "") ?? [])].filter((k) => alive.includes(k.split("/")[0] ?? ""));
    const must = c.count <= free.length && homes.every((k) => free.includes(k));
    if (must) this.mustGrant += 1;
    const r = this.pool.acquire({ ...req(c.count, session), request_id: `r${this.step}`, ttl_ms: c.ttl, credit: c.credit }, this.now);
    if (!r.ok) {
      check(!must, "liveness", () => `acquire of ${c.count} (session ${session}) got "${r.reason}", free: ${free}`);
      check(r.reason !== "no_worker" || alive.length === 0, "liveness", () => `"no_worker" while ${alive} are alive`);
      return;
    }
    check(r.leases.length === c.count, "grant", () => `asked ${c.count} slots, got ${r.leases.length}`);
    for (const l of r.leases) {
      const key = `${l.worker_id}/${l.slot}`;
      const at = `${l.lease_id}#${l.fencing_token} on ${key}`;
      check(alive.includes(l.worker_id), "dead-worker", () => `granted ${at}: silent for over ${TIMEOUT} ms, or unknown`);
      check(l.fencing_token > this.maxGranted, "monotonic", () => `granted ${at}, not above the highest token granted, ${this.maxGranted}`);
      const ever = this.#worker(l.worker_id).seenEver[l.slot] ?? 0;
      check(l.fencing_token > ever, "stale-grant", () => `granted ${at}, but the worker already saw token ${ever} there`);
      const other = this.#on(key);
      check(other === undefined, "double-grant", () => `granted ${at} while the leader holds ${other?.t.id}#${other?.t.token} there`);
      // A slot last reported busy under a token this leader never bound there runs a lease it does not know.
      const busyAt = this.heard.get(l.worker_id)?.busy[l.slot] ?? null;
      check(busyAt === null || busyAt <= (this.issued.get(key) ?? 0), "foreign-busy", () => `granted ${at}, busy under token ${busyAt}`);
      check(l.expires_at === this.now + c.ttl, "grant", () => `${at} expires at ${l.expires_at}, not ${this.now + c.ttl}`);
      const t: Tracked = {
        id: l.lease_id,
        token: l.fencing_token,
        worker: l.worker_id,
        slot: l.slot,
        session: l.session,
        term: this.term,
        credit: l.credit === true,
        started: false,
        uses: 0,
      };
      check(t.credit === (c.credit && c.count === 1), "credit", () => `${at} granted as credit: ${t.credit}`);
      this.maxGranted = l.fencing_token;
      this.tracked.set(t.id, t);
      this.held.push(t);
      this.table.set(t.id, { t, expiry: l.expires_at, ttl: c.ttl });
      this.#bind(key, t);
      this.pending.set(t.id, { ...l });
      if (l.session !== null) this.homes.set(l.session, (this.homes.get(l.session) ?? new Set()).add(key));
      this.grants += 1;
    }
  }

  /** The holder sends its generation to the worker (once; maybe after the lease ended). */
  start(i: number): void {
    const t = this.held[i % Math.max(1, this.held.length)];
    if (t === undefined || t.started) return;
    t.started = true;
    if (t.uses++ > 0) seen.creditsReused += 1;
    const sw = this.#worker(t.worker);
    const { admitted, tookOver } = sw.admit(t, this.step);
    const at = `${t.id}#${t.token} on ${t.worker}/${t.slot}`;
    if (!admitted) {
      seen.refused += 1;
      const p = this.pool.leases.get(t.id);
      // The worker ended it (done, given back) and the pool has not heard yet: its release was lost.
      const endedHere = (sw.ended[t.slot] ?? 0) >= t.token;
      check(p === undefined || p.expires_at <= this.now || endedHere, "refused-held", () => `worker refused ${at}, which the pool holds`);
      return;
    }
    if (tookOver === null) return;
    seen.takeovers += 1;
    // The takeover ended the older run at this instant. If the leader that granted the newer lease
    // still holds the older one, it had the worker run both at once, and only fencing hid it.
    const old = tookOver.lease;
    const overlap = t.term === this.term && this.table.has(old.id);
    check(!overlap, "overlap", () => `${at} took over from ${old.id}, which its leader holds; history: ${sw.describe(t.slot)}`);
  }

  /**
   * The generation ends; the holder (or the worker for it) releases with its token, unless that
   * is lost. A credit the worker keeps stays with its holder, who may start it again.
   */
  finish(i: number, release: boolean, keep: boolean): void {
    const idx = i % Math.max(1, this.held.length);
    const t = this.held[idx];
    if (t === undefined) return;
    if (this.#worker(t.worker).finish(t, this.step, keep)) {
      seen.creditsKept += 1;
      t.started = false; // its holder may send the next request under it
      return;
    }
    this.held.splice(idx, 1);
    if (!release) return;
    this.#releaseEnded(t);
  }

  /** The worker releases a lease that ended there (a finished generation, a credit given back). */
  #releaseEnded(t: Tracked): void {
    const holds = this.table.has(t.id);
    const ok = this.pool.release(t.id, t.token, 10);
    check(ok === holds, "release", () => `release of ${t.id} answered ${ok}; the leader ${holds ? "holds" : "does not hold"} it`);
    this.#drop(t.id);
  }

  /** A credit kept idle on a worker is given back by it (idle too long); its holder drops it. */
  giveBack(i: number, release: boolean): void {
    const kept = this.held.filter((t) => !t.started && this.#worker(t.worker).held[t.slot] === t.token);
    const t = kept[i % Math.max(1, kept.length)];
    if (t === undefined) return;
    if (this.#worker(t.worker).giveBack(t.slot, t.token) === null) return;
    seen.creditsGivenBack += 1;
    this.held.splice(this.held.indexOf(t), 1);
    if (release) this.#releaseEnded(t);
  }

  /** Someone waits: the pool asks the credits back; reachable workers give idle ones back at once. */
  revoke(release: boolean): void {
    for (const a of this.pool.revokeCredits("m")) {
      if (a.type !== "revoke") continue;
      seen.creditsAskedBack += 1;
      const e = this.table.get(this.bound.get(`${a.worker}/${a.slot}`) ?? "");
      check(
        e?.t.credit === true && e.t.token === a.fencing_token,
        "revoke",
        () => `asked back ${a.worker}/${a.slot}#${a.fencing_token}, not a credit the leader holds`,
      );
      const sw = this.#worker(a.worker);
      if (!sw.reachable) continue;
      const token = sw.revoke(a.slot, a.fencing_token);
      const t = this.held.find((x) => x.worker === a.worker && x.slot === a.slot && x.token === token);
      if (token === null || t === undefined) continue;
      this.held.splice(this.held.indexOf(t), 1);
      if (release) this.#releaseEnded(t);
    }
  }

  renew(i: number, ttlMs: number): void {
    const t = this.held[i % Math.max(1, this.held.length)];
    if (t === undefined) return;
    const e = this.table.get(t.id);
    const r = this.pool.renew(t.id, t.token, ttlMs, this.now);
    check((r !== undefined) === (e !== undefined), "renew", () => `renew of ${t.id} answered ${!!r}; the leader holds it: ${!!e}`);
    if (r === undefined || e === undefined) return;
    e.expiry = this.now + ttlMs;
    this.pending.set(t.id, { ...r });
  }

  /** A caller presents a lease's id with a token that is not the lease's: both calls must refuse. */
  badToken(i: number, delta: number): void {
    const t = this.held[i % Math.max(1, this.held.length)];
    if (t === undefined) return;
    seen.badTokens += 1;
    const wrong = t.token + delta;
    check(this.pool.renew(t.id, wrong, 20_000, this.now) === undefined, "token", () => `renewed ${t.id}#${t.token} with token ${wrong}`);
    check(!this.pool.release(t.id, wrong, 0), "token", () => `released ${t.id}#${t.token} with token ${wrong}`);
  }

  /** Time passes: the leader expires leases, declares silent workers dead, flushes its journal. */
  advance(ms: number): void {
    this.now += ms;
    const expired = [...this.table.values()].filter((e) => e.expiry <= this.now);
    // Generations whose lease expires now, on a reachable worker: the leader must abort them.
    const due = this.workers
      .filter((x) => x.reachable)
      .flatMap((x) => x.running.flatMap((r) => (r && expired.some((e) => e.t === r.lease) ? [r] : [])));
    for (const e of expired) this.#drop(e.t.id);
    for (const [id, h] of this.heard) {
      if (!h.alive || this.now - h.lastSeen <= TIMEOUT) continue;
      h.alive = false; // declared dead: the leases bound to its slots are revoked
      for (let s = 0; s < SLOTS; s++) {
        const lease = this.bound.get(`${id}/${s}`);
        if (lease !== undefined) seen.revoked += 1;
        if (lease !== undefined) this.#drop(lease);
      }
    }
    for (const a of this.pool.tick(this.now)) {
      if (a.type === "abort" && this.#worker(a.worker).reachable) this.#worker(a.worker).abort(a.slot, a.fencing_token, this.step);
      if (a.type === "lease-removed") this.pending.set(a.lease_id, null);
    }
    for (const r of due) {
      check(r.end !== null, "abort", () => `${r.lease.id} expired and still runs on ${r.lease.worker}/${r.lease.slot}`);
      seen.aborts += 1;
    }
    this.#flush(() => true);
  }

  /** Writes the journal's pending changes that `lands` lets through to KV; the rest are lost. */
  #flush(lands: (i: number) => boolean): void {
    let n = 0;
    for (const [id, rec] of this.pending) {
      if (!lands(n++)) continue;
      if (rec === null) this.kv.delete(id);
      else this.kv.set(id, rec);
    }
    this.pending = new Map();
  }

  /**
   * The leader dies mid-flush (the bits of `landed` say which pending changes reached KV) and a
   * standby leads: a new fencing block, then KV's records restored in an order set by `order`,
   * the heartbeats before or after. Of two records on one slot, the lower token's lease had
   * ended before the other was granted: only the higher one is restored.
   */
  failover(c: Extract<Cmd, { t: "failover" }>): void {
    this.#flush((n) => ((c.landed >>> (n % 30)) & 1) === 1);
    this.pool = this.#newPool(this.reserved);
    this.reserved += BLOCK;
    this.term += 1;
    this.table = new Map();
    this.bound = new Map();
    this.issued = new Map();
    this.heard = new Map();
    const restore = () => {
      const recs = [...this.kv.values()].sort((a, b) => ((a.fencing_token * c.order) % 7) - ((b.fencing_token * c.order) % 7));
      for (const rec of recs) {
        this.pool.restoreLease({ ...rec }, this.now);
        const t = this.tracked.get(rec.lease_id);
        const key = `${rec.worker_id}/${rec.slot}`;
        const rival = this.#on(key);
        if (rec.expires_at <= this.now || t === undefined) continue;
        if (rival !== undefined) seen.rivals += 1;
        if (rival !== undefined && rival.t.token >= t.token) continue;
        if (rival !== undefined) this.#drop(rival.t.id, true);
        this.table.set(t.id, { t, expiry: rec.expires_at, ttl: Math.max(0, rec.expires_at - rec.granted_at) });
        if (this.heard.has(t.worker) && !this.bound.has(key)) this.#bind(key, t);
        seen.restored += 1;
      }
    };
    if (!c.heartbeatsFirst) restore();
    for (const x of this.workers) this.deliver(x);
    if (c.heartbeatsFirst) restore();
  }

  apply(c: Cmd): void {
    const x = "w" in c ? this.workers[c.w] : undefined;
    if (c.t === "hb" && x !== undefined) this.deliver(x);
    else if (c.t === "acquire") this.acquire(c);
    else if (c.t === "start") this.start(c.i);
    else if (c.t === "finish") this.finish(c.i, c.release, c.keep);
    else if (c.t === "giveBack") this.giveBack(c.i, c.release);
    else if (c.t === "revoke") this.revoke(c.release);
    else if (c.t === "renew") this.renew(c.i, c.ttl);
    else if (c.t === "badToken") this.badToken(c.i, c.delta);
    else if (c.t === "advance") this.advance(c.ms);
    else if (c.t === "failover") this.failover(c);
    else if (x !== undefined && c.t === "crash") x.crash(this.step);
    else if (x !== undefined) x.reachable = c.t === "revive";
  }

  /** The pool's lease table is the model's (same leases, same expiry), with one lease per slot. */
  checkTable(): void {
    const slots = [...this.pool.leases.values()].map((l) => `${l.worker_id}/${l.slot}`);
    check(new Set(slots).size === slots.length, "one-lease", () => `two leases on one slot: ${slots}`);
    const pool = [...this.pool.leases.keys()].sort();
    const model = [...this.table.keys()].sort();
    check(pool.join() === model.join(), "table", () => `the pool holds [${pool}], the rules say [${model}]`);
    for (const [id, e] of this.table) {
      const exp = this.pool.leases.get(id)?.expires_at;
      check(exp === e.expiry, "table", () => `the pool has ${id} expire at ${exp}, the rules say ${e.expiry}`);
    }
  }
}

/** Runs a command sequence after a first heartbeat from every worker, checking after every step. */
function run(cmds: Cmd[]): void {
  const sim = new Sim();
  for (const x of sim.workers) sim.deliver(x);
  for (const c of cmds) {
    sim.step += 1;
    sim.apply(c);
    sim.checkTable();
  }
  check(sim.mustGrant === 0 || sim.grants > 0, "progress", () => `${sim.mustGrant} acquires found free slots, none was granted`);
  seen.grants += sim.grants;
  seen.mustGrant += sim.mustGrant;
}

/** An acquire request for `count` slots (1 s TTL). */
const req = (count: number, session: string | null = null) =>
  ({ request_id: "r", holder: "api", model: "m", session, count, strategy: "lru", ttl_ms: 1000 }) as const;

describe("Pool", () => {
  it("fences, grants and reclaims as the workers, the clients and the lease rules require, under any interleaving", () => {
    for (const k of Object.keys(seen) as (keyof typeof seen)[]) seen[k] = 0;
    fc.assert(
      fc.property(fc.array(cmd, { minLength: 1, maxLength: 120, size: "max" }), (cmds) => run(cmds)),
      { numRuns: 2000 },
    );
    for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThan(0);
  });

  it("refuses renew and release under another lease's token, and the slot stays leased", () => {
    const pool = new Pool();
    pool.heartbeat(new SimWorker("w1").heartbeat(0), 0);
    const r = pool.acquire(req(2), 0);
    const [a, b] = r.ok ? r.leases : [];
    if (a === undefined || b === undefined) throw new Error("no lease");
    // A caller that mixes up the two leases of a batch.
    expect(pool.renew(a.lease_id, b.fencing_token, 1000, 1)).toBeUndefined();
    expect(pool.release(a.lease_id, b.fencing_token, 0)).toBe(false);
    expect(pool.leases.has(a.lease_id)).toBe(true);
    expect(pool.acquire(req(1), 2)).toEqual({ ok: false, reason: "busy" });
    expect(pool.release(a.lease_id, a.fencing_token, 0)).toBe(true);
    expect(pool.acquire(req(1), 3).ok).toBe(true);
  });

  it("restores only the newer of two records on one slot, in any order (an old leader died before deleting one)", () => {
    for (const [order, heartbeatFirst] of [
      [[0, 1], false],
      [[1, 0], false],
      [[0, 1], true],
      [[1, 0], true],
    ] as const) {
      const pool = new Pool({ fencingStart: 16 });
      const worker = new SimWorker("w1");
      worker.fencing[0] = 3; // it ran "old" (token 3) on slot 0; "new" (token 9) has not started
      const rec = (id: string, token: number) => ({ ...req(1), lease_id: id, fencing_token: token, worker_id: "w1", slot: 0 });
      const recs = [rec("old", 3), rec("new", 9)].map((r) => ({
        ...r,
        granted_at: 0,
        expires_at: 20_000,
        residency: "cold" as const,
        cached_tokens: 0,
      }));
      if (heartbeatFirst) pool.heartbeat(worker.heartbeat(1), 1);
      for (const k of order) pool.restoreLease({ ...(recs[k] as LeaseRecord) }, 1);
      pool.heartbeat(worker.heartbeat(1), 1);
      expect([...pool.leases.keys()]).toEqual(["new"]);
      const r = pool.acquire(req(1), 2);
      expect(r.ok && r.leases.map((l) => l.slot)).toEqual([1]);
    }
  });

  it("gives a session its own slot back (L1) and queues it while that slot is busy", () => {
    const pool = new Pool();
    pool.heartbeat(new SimWorker("w1").heartbeat(0), 0);
    const first = pool.acquire(req(1, "t/a"), 0);
    if (!first.ok) throw new Error("no lease");
    expect(first.leases[0]?.residency).toBe("cold");
    expect(pool.acquire(req(1, "t/a"), 1)).toEqual({ ok: false, reason: "busy" });
    pool.release(first.leases[0]?.lease_id ?? "", first.leases[0]?.fencing_token ?? 0, 42);
    const second = pool.acquire(req(1, "t/a"), 2);
    if (!second.ok) throw new Error("no lease");
    expect(second.leases[0]).toMatchObject({ residency: "l1", cached_tokens: 42, slot: first.leases[0]?.slot });
  });

  it("evicts an idle session by strategy when every slot holds one", () => {
    const pool = new Pool();
    pool.heartbeat(new SimWorker("w1").heartbeat(0), 0);
    const take = (session: string, now: number) => {
      const r = pool.acquire(req(1, session), now);
      const l = r.ok ? r.leases[0] : undefined;
      if (l === undefined) throw new Error(`no lease for ${session}`);
      pool.release(l.lease_id, l.fencing_token, 5);
      return r;
    };
    take("t/a", 0);
    take("t/b", 1);
    take("t/a", 2); // a is now more recent than b
    const r = take("t/c", 3);
    expect(r.ok && r.evicted.map((e) => e.session)).toEqual(["t/b"]);
  });
});
