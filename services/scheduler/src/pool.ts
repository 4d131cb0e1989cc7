/**
 * The context pool as a pure state machine: every worker's slots, who holds a lease on which,
 * which session's KV state lives where, and the fencing counter. No I/O and no clock of its
 * own (time is passed in), so the property test can drive it through any interleaving of
 * acquire, renew, release, expiry, worker death and leader failover.
 *
 * Invariants (checked by `pool.test.ts`):
 * - a slot has at most one live lease;
 * - fencing tokens only grow, also across a failover (a new leader starts above every token
 *   the old one could have granted: tokens are reserved in blocks persisted before use).
 *
 * @module
 */
import type { Heartbeat, Residency } from "@atlas/contracts";
import { leastLoaded, leastRecentlyUsed, load, pickFree, residentSlot } from "./placement.ts";
import type {
  AcquireRequest,
  AcquireResult,
  LeaseRecord,
  PoolAction,
  PoolOptions,
  SlotState,
  VictimChooser,
  WorkerState,
} from "./pool_types.ts";

export type { AcquireRequest, AcquireResult, LeaseRecord, PoolAction, PoolOptions, VictimChooser } from "./pool_types.ts";

/** The context pool. */
export class Pool {
  readonly #workers = new Map<string, WorkerState>();
  readonly #leases = new Map<string, LeaseRecord>();
  readonly #heartbeatTimeoutMs: number;
  readonly #chooseVictim: VictimChooser;
  readonly #newId: () => string;
  readonly #observer: PoolOptions["observer"];
  readonly #lastUse = new Map<string, number>();
  /** Each lease's TTL, by which a heartbeat that shows it running extends it. */
  readonly #ttl = new WeakMap<LeaseRecord, number>();
  /** Credits already asked back (`revoke`), so each is asked once. */
  readonly #revoked = new WeakSet<LeaseRecord>();
  #fencing: number;
  #useClock = 0;

  constructor(options: PoolOptions = {}) {
    this.#heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 3000;
    this.#fencing = options.fencingStart ?? 0;
    this.#newId = options.newId ?? (() => crypto.randomUUID());
    this.#observer = options.observer;
    this.#chooseVictim = options.chooseVictim ?? ((c) => leastRecentlyUsed(c, this.#lastUse));
  }

  /** The highest fencing token granted so far. */
  get fencingToken(): number {
    return this.#fencing;
  }

  /** Live leases. */
  get leases(): ReadonlyMap<string, LeaseRecord> {
    return this.#leases;
  }

  /**
   * Merges a worker's heartbeat (its first one announces it). The worker is the source of truth
   * for what ran: a leased slot it reports idle at or past the lease's fencing token has finished
   * that lease's generation, so the lease ends here even if its release never arrives (lost in a
   * failover, or restored from a write-behind record that was already over). A slot reported
   * busy at exactly its lease's token is running that lease: the lease is extended by its TTL,
   * so a running generation needs no renewal message. A slot reported idle but `held` at its
   * lease's token idles under a slot credit its holder keeps: alive, and extended the same way.
   * Returns the leases it ended, as `lease-removed` actions.
   */
  heartbeat(hb: Heartbeat, now: number): PoolAction[] {
    const actions: PoolAction[] = [];
    let w = this.#workers.get(hb.worker_id);
    if (w === undefined || w.slots.length !== hb.slots.length) {
      w = {
        id: hb.worker_id,
        model: hb.model,
        fingerprint: hb.fingerprint,
        ctxSize: hb.ctx_size,
        lastSeen: now,
        alive: true,
        draining: hb.draining,
        slots: hb.slots.map((s) => {
          const lease = this.#leaseOn(hb.worker_id, s.slot);
          return {
            worker: hb.worker_id,
            index: s.slot,
            session: null,
            tokens: 0,
            lease,
            foreignBusy: false,
            reportedToken: 0,
            grantedToken: lease?.fencing_token ?? 0,
          };
        }),
        l2: new Map(),
      };
      this.#workers.set(hb.worker_id, w);
    }
    w.model = hb.model;
    w.fingerprint = hb.fingerprint;
    w.lastSeen = now;
    // A drain is sticky until the worker has been declared dead and comes back.
    w.draining = (w.alive && w.draining) || hb.draining;
    w.alive = true;
    for (const r of hb.slots) {
      const s = w.slots[r.slot];
      if (s === undefined) continue;
      s.reportedToken = Math.max(s.reportedToken, r.fencing_token);
      const ended = s.lease;
      const held = r.busy || r.held === true; // running, or idling under a credit its holder keeps
      if (ended !== null && !held && r.fencing_token >= ended.fencing_token) {
        const kept = r.session !== null && r.session === ended.session ? r.tokens : 0;
        if (this.release(ended.lease_id, ended.fencing_token, kept)) actions.push({ type: "lease-removed", lease_id: ended.lease_id });
      } else if (ended !== null && held && r.fencing_token === ended.fencing_token) {
        ended.expires_at = Math.max(ended.expires_at, now + (this.#ttl.get(ended) ?? 0));
        // A credit serves its holder's sessions too: the slot's session is the worker's word.
        if (!r.busy && r.session !== s.session) this.#rehome(s, r.session, r.tokens);
      }
      // Busy (or held) under a token this pool never granted (a lease of a previous leader it
      // does not know): the slot stays out of the pool until the worker reports it idle. A report
      // older than the pool's last grant on the slot says nothing new.
      s.foreignBusy = held && r.fencing_token > s.grantedToken;
      if (s.lease === null && !held && r.fencing_token >= s.grantedToken) {
        s.session = r.session;
        s.tokens = r.tokens;
      }
    }
    w.l2 = new Map(hb.l2.map((e) => [e.session, { bytes: e.bytes, tokens: e.tokens }]));
    return actions;
  }

  /** Leases slots for a request, all or nothing; `busy` means: wait and try again. */
  acquire(req: AcquireRequest, now: number): AcquireResult {
    const workers = [...this.#workers.values()].filter((w) => w.alive && !w.draining && w.model === req.model);
    if (workers.length === 0) return { ok: false, reason: "no_worker" };
    const free = (w: WorkerState) => w.slots.filter((s) => s.lease === null && !s.foreignBusy);
    const picked: { slot: SlotState; residency: Residency; cached: number }[] = [];
    const taken = new Set<SlotState>();

    if (req.session !== null) {
      const home = residentSlot(req.session, workers);
      if (home !== undefined) {
        if (home.lease !== null || home.foreignBusy) return { ok: false, reason: "busy" }; // the session's own slot is in use
        picked.push({ slot: home, residency: "l1", cached: home.tokens });
        taken.add(home);
      } else {
        const l2Home = workers.filter((w) => w.l2.has(req.session as string) && free(w).length > 0).sort((a, b) => load(a) - load(b))[0];
        if (l2Home !== undefined) {
          const slot = pickFree(free(l2Home), taken, req.strategy, this.#chooseVictim);
          if (slot !== undefined) {
            picked.push({ slot, residency: "l2", cached: l2Home.l2.get(req.session)?.tokens ?? 0 });
            taken.add(slot);
          }
        }
      }
    }
    // The rest (or all): least-loaded workers first, empty slots before evictions.
    const usable = (s: SlotState) => s.lease === null && !s.foreignBusy && !taken.has(s);
    while (picked.length < req.count) {
      const w = leastLoaded(workers, usable);
      const slot = w === undefined ? undefined : pickFree(free(w), taken, req.strategy, this.#chooseVictim);
      if (slot === undefined) return { ok: false, reason: "busy" };
      picked.push({ slot, residency: "cold", cached: 0 });
      taken.add(slot);
    }

    const evicted: { session: string; worker: string; slot: number }[] = [];
    const leases = picked.map(({ slot, residency, cached }, i) => {
      const session = i === 0 ? req.session : null;
      if (slot.session !== null && slot.session !== session) {
        evicted.push({ session: slot.session, worker: slot.worker, slot: slot.index });
        this.#observer?.left(slot.session);
        slot.session = null;
        slot.tokens = 0;
      }
      const lease: LeaseRecord = {
        lease_id: this.#newId(),
        fencing_token: ++this.#fencing,
        worker_id: slot.worker,
        slot: slot.index,
        session,
        holder: req.holder,
        granted_at: now,
        expires_at: now + req.ttl_ms,
        residency,
        cached_tokens: cached,
        request_id: req.request_id,
        ...(req.credit === true && req.count === 1 ? { credit: true } : {}),
      };
      slot.lease = lease;
      slot.grantedToken = lease.fencing_token;
      this.#ttl.set(lease, req.ttl_ms);
      if (session !== null) {
        slot.session = session;
        this.#lastUse.set(session, ++this.#useClock);
      }
      this.#leases.set(lease.lease_id, lease);
      return lease;
    });
    return { ok: true, leases, evicted };
  }

  /** Extends a live lease; false when it is gone or the token does not match. */
  renew(leaseId: string, fencingToken: number, ttlMs: number, now: number): LeaseRecord | undefined {
    const lease = this.#leases.get(leaseId);
    if (lease === undefined || lease.fencing_token !== fencingToken || lease.expires_at <= now) return undefined;
    lease.expires_at = now + ttlMs;
    return lease;
  }

  /**
   * Ends a lease; the slot keeps `tokensInSlot` tokens of the lease's session, or of `session`
   * when the worker says the slot holds another one now (a slot credit serves several).
   */
  release(leaseId: string, fencingToken: number, tokensInSlot: number, session?: string | null): boolean {
    const lease = this.#leases.get(leaseId);
    if (lease === undefined || lease.fencing_token !== fencingToken) return false;
    this.#leases.delete(leaseId);
    const slot = this.#workers.get(lease.worker_id)?.slots[lease.slot];
    if (slot !== undefined && slot.lease?.lease_id === leaseId) {
      if (session !== undefined && session !== slot.session) this.#rehome(slot, session, tokensInSlot);
      slot.lease = null;
      slot.tokens = tokensInSlot;
      if (tokensInSlot === 0) {
        if (slot.session !== null) this.#observer?.left(slot.session);
        slot.session = null;
      } else if (slot.session !== null) this.#observer?.used(slot.session, tokensInSlot); // one use, with its real size
    }
    return true;
  }

  /** Releases every lease granted for `requestId` to `holder` (the caller gave up); returns how many. */
  cancel(requestId: string, holder: string): number {
    let n = 0;
    for (const lease of [...this.#leases.values()]) {
      if (lease.request_id === requestId && lease.holder === holder && this.release(lease.lease_id, lease.fencing_token, 0)) n += 1;
    }
    return n;
  }

  /**
   * Asks every slot credit on `model`'s workers back (someone waits for a slot): each is asked
   * once; its worker gives it back at once if idle, else when its generation ends, and the
   * release frees the slot as any release does.
   */
  revokeCredits(model: string): PoolAction[] {
    const actions: PoolAction[] = [];
    for (const lease of this.#leases.values()) {
      if (lease.credit !== true || this.#revoked.has(lease) || this.#workers.get(lease.worker_id)?.model !== model) continue;
      this.#revoked.add(lease);
      actions.push({ type: "revoke", worker: lease.worker_id, slot: lease.slot, fencing_token: lease.fencing_token });
    }
    return actions;
  }

  /** Expires leases and declares silent workers dead; returns what the owner must tell workers. */
  tick(now: number): PoolAction[] {
    const actions: PoolAction[] = [];
    for (const lease of [...this.#leases.values()]) {
      if (lease.expires_at > now) continue;
      this.#revoke(lease);
      actions.push({ type: "abort", worker: lease.worker_id, slot: lease.slot, fencing_token: lease.fencing_token });
      actions.push({ type: "lease-removed", lease_id: lease.lease_id });
    }
    for (const w of this.#workers.values()) {
      if (!w.alive || now - w.lastSeen <= this.#heartbeatTimeoutMs) continue;
      w.alive = false;
      for (const s of w.slots) {
        if (s.lease !== null) {
          actions.push({ type: "lease-removed", lease_id: s.lease.lease_id });
          this.#leases.delete(s.lease.lease_id);
          s.lease = null;
        }
        s.session = null;
        s.tokens = 0;
      }
      w.l2.clear();
      actions.push({ type: "worker-dead", worker: w.id });
    }
    return actions;
  }

  /** Restores leases a previous leader persisted (they must not be granted twice). */
  restoreLease(lease: LeaseRecord, now: number): void {
    if (lease.expires_at <= now) return;
    this.#fencing = Math.max(this.#fencing, lease.fencing_token);
    // Two records on one slot (the old leader died before deleting one): the lower token's lease
    // had ended before the higher one was granted there. Only the higher one is kept, else the
    // ended one could hold the slot, be ended by a heartbeat, and leave the live one unbound.
    const rival = this.#leaseOn(lease.worker_id, lease.slot);
    if (rival !== null && rival.fencing_token >= lease.fencing_token) return;
    if (rival !== null) {
      this.#leases.delete(rival.lease_id);
      const held = this.#workers.get(rival.worker_id)?.slots[rival.slot];
      if (held?.lease === rival) held.lease = null;
    }
    this.#leases.set(lease.lease_id, lease);
    this.#ttl.set(lease, Math.max(0, lease.expires_at - lease.granted_at));
    const slot = this.#workers.get(lease.worker_id)?.slots[lease.slot];
    if (slot !== undefined && slot.lease === null) {
      slot.lease = lease;
      slot.grantedToken = Math.max(slot.grantedToken, lease.fencing_token);
    }
  }

  /** Stops leasing a worker's slots; its sessions lose L1/L2 residency (they move to L3). */
  drain(workerId: string): boolean {
    const w = this.#workers.get(workerId);
    if (w === undefined) return false;
    w.draining = true;
    for (const s of w.slots) {
      if (s.lease === null) {
        s.session = null;
        s.tokens = 0;
      }
    }
    w.l2.clear();
    return true;
  }

  /** Removes a session's residency everywhere (it was deleted). */
  forgetSession(session: string): void {
    for (const w of this.#workers.values()) {
      for (const s of w.slots) {
        if (s.session === session && s.lease === null) {
          s.session = null;
          s.tokens = 0;
        }
      }
      w.l2.delete(session);
    }
    this.#lastUse.delete(session);
  }

  /** A read-only view for status. */
  snapshot(now: number) {
    return [...this.#workers.values()].map((w) => ({
      worker_id: w.id,
      model: w.model,
      alive: w.alive,
      draining: w.draining,
      last_heartbeat_ms_ago: now - w.lastSeen,
      slots: w.slots.map((s) => ({
        slot: s.index,
        session: s.session,
        tokens: s.tokens,
        lease_id: s.lease?.lease_id ?? null,
        expires_at: s.lease?.expires_at ?? null,
      })),
    }));
  }

  #leaseOn(worker: string, slot: number): LeaseRecord | null {
    for (const l of this.#leases.values()) if (l.worker_id === worker && l.slot === slot) return l;
    return null;
  }

  /**
   * The worker says `slot` holds `session` now (it ran there under a slot credit): the slot's
   * former session has left it, and the session has no other home in L1 (the worker keeps one).
   */
  #rehome(slot: SlotState, session: string | null, tokens: number): void {
    if (slot.session !== null) this.#observer?.left(slot.session);
    if (session !== null) {
      for (const w of this.#workers.values()) {
        for (const s of w.slots) {
          if (s !== slot && s.session === session) {
            s.session = null;
            s.tokens = 0;
          }
        }
      }
      this.#lastUse.set(session, ++this.#useClock);
    }
    slot.session = session;
    slot.tokens = session === null ? 0 : tokens;
  }

  #revoke(lease: LeaseRecord): void {
    this.#leases.delete(lease.lease_id);
    const slot = this.#workers.get(lease.worker_id)?.slots[lease.slot];
    if (slot?.lease?.lease_id === lease.lease_id) {
      slot.lease = null;
      // What the slot holds after an aborted generation is unknown until the next heartbeat.
      slot.session = null;
      slot.tokens = 0;
    }
  }
}
