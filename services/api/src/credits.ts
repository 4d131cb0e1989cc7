/**
 * The slot credits this api instance holds: leases that workers keep for it between requests
 * (docs/scheduler.md, "Slot credits"), so that a one-sequence request goes api → worker → api
 * without asking the scheduler.
 *
 * A credit is born from an ordinary dispatch that asked for one (`SchedulerDispatch.credit`,
 * granted only while nobody waits for a slot); the worker says it kept the lease in
 * `GenerateEnd.credit`. The api then uses it for one request at a time, most recently used first,
 * so the credits it needs stay warm and the rest idle out. A credit is used only while it has
 * idled less than half of `CREDIT_IDLE_MS` (the worker gives it back after the whole of it);
 * the worker refuses a credit it no longer keeps (`conflict`, nothing ran) and the request goes
 * through the scheduler instead. No message is spent on credits: they come with dispatches and
 * go by themselves.
 *
 * Each credit remembers the session its slot holds (the last request that ran under it). A
 * session's turn takes the credit that holds its session, so a conversation that goes on quickly
 * (an agent's loop, a client's follow-up) stays on its slot without the scheduler; a session
 * that persistence says has nothing stored (`session_fresh`) may take any credit; any other
 * session goes through the scheduler, which knows where its state lives. A sessionless request
 * takes a credit whose slot holds no session, so it does not push a conversation out of L1 while
 * another slot is empty.
 *
 * When this api holds every slot of the model's workers as credits (all in use), a new
 * sessionless request waits here for one to come back instead of asking the scheduler, which
 * could only queue it and take a credit away: a saturated api then runs without the scheduler
 * too. The waiters are served round-robin across tenants, first come first served within one;
 * a credit the worker did not keep wakes a waiter to dispatch through the scheduler, whose fair
 * queue is the arbiter again as soon as anyone else waits there.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import { CREDIT_IDLE_MS } from "@atlas/contracts";

/** How long a request waits at the api for one of its credits before it queues at the scheduler instead. */
export const CREDIT_WAIT_MS = 2000;

/** A lease a worker keeps for this api. */
export interface Credit {
  readonly worker_id: string;
  readonly lease_id: string;
  readonly fencing_token: number;
  readonly slot: number;
}

interface Idle {
  readonly credit: Credit;
  readonly since: number;
  /** The session (`sessionKey`) whose state the slot holds, null for none. */
  readonly session: string | null;
}

interface Waiter {
  readonly tenant: string;
  /** A credit handed over (its claim goes with it), or undefined: dispatch instead. */
  resolve(credit: Credit | undefined): void;
}

/** The credits of one api instance, by model. */
export class Credits {
  readonly #idle = new Map<string, Idle[]>();
  /** Per model: credits in use, plus dispatches in flight that asked for one. */
  readonly #inUse = new Map<string, number>();
  /** Per model, by tenant: requests waiting for a credit to come back. */
  readonly #waiting = new Map<string, Map<string, Waiter[]>>();
  /** Per model: the tenant served last, for the round-robin. */
  readonly #lastServed = new Map<string, string>();
  readonly #max: number;
  readonly #now: () => number;
  readonly #slotsOf: (model: string) => number | undefined;

  /**
   * `max`: credits held at most per model (0: none, every request goes through the scheduler).
   * `slotsOf`: the slots of a model's workers together (from the catalog), to know when this api
   * holds them all.
   */
  constructor(max: number, options: { now?: () => number; slotsOf?: (model: string) => number | undefined } = {}) {
    this.#max = max;
    this.#now = options.now ?? (() => performance.now());
    this.#slotsOf = options.slotsOf ?? (() => undefined);
  }

  /**
   * Whether a request for `model` should wait here for a credit: this api holds (or has asked
   * for) as many credits as the model's workers have slots, so the scheduler has none to give.
   */
  full(model: string): boolean {
    const slots = this.#slotsOf(model);
    // Holding fewer than every slot (the maximum is lower), other slots may be free: ask the scheduler.
    if (slots === undefined || slots < 1 || slots > this.#max) return false;
    return (this.#inUse.get(model) ?? 0) >= slots;
  }

  /**
   * Waits for a credit of `model` to come back (see {@link full}). Resolves with it (claimed:
   * end its use with {@link settle}), or with undefined when a credit was lost meanwhile (the
   * caller dispatches through the scheduler), also after `timeoutMs` without one: a wait here is
   * only a shortcut, the scheduler's fair queue stays the place to wait long. Rejects with
   * `cancelled` when the signal aborts.
   */
  wait(model: string, tenant: string, signal: AbortSignal, timeoutMs = CREDIT_WAIT_MS): Promise<Credit | undefined> {
    const cancelled = () =>
      new BusError("cancelled", "The request was cancelled while waiting for a slot credit", { cause: signal.reason });
    if (signal.aborted) return Promise.reject(cancelled());
    return new Promise((resolve, reject) => {
      const byTenant = this.#waiting.get(model) ?? new Map<string, Waiter[]>();
      this.#waiting.set(model, byTenant);
      const list = byTenant.get(tenant) ?? [];
      byTenant.set(tenant, list);
      const leave = (outcome: () => void) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        const i = list.indexOf(waiter);
        if (i !== -1) list.splice(i, 1);
        if (list.length === 0 && byTenant.get(tenant) === list) byTenant.delete(tenant);
        outcome();
      };
      const onAbort = () => leave(() => reject(cancelled()));
      const timer = setTimeout(() => leave(() => resolve(undefined)), timeoutMs);
      timer.unref?.();
      const waiter: Waiter = {
        tenant,
        resolve: (credit) => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          resolve(credit);
        },
      };
      list.push(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Takes a usable credit of `model` for a request of `session` (null: sessionless); end its use
   * with {@link settle} (`claimed: true`). A session gets the credit whose slot holds it, or,
   * when `fresh` (it has no state anywhere), any credit; otherwise none (see the module doc). Any
   * credit is the freshest one whose slot holds no session; a slot that holds a conversation (the
   * one idle longest) only when this api holds every slot of the model, else the scheduler picks
   * (an empty slot elsewhere, or the session its strategy evicts).
   */
  take(model: string, session: string | null = null, fresh = false): Credit | undefined {
    const idle = this.#fresh(model);
    let at = session === null ? -1 : idle.findIndex((e) => e.session === session);
    if (at === -1 && (session === null || fresh)) {
      at = idle.findLastIndex((e) => e.session === null);
      if (at === -1 && idle.length > 0 && this.#holdsAll(model, idle.length)) at = 0;
    }
    if (at === -1) return undefined;
    const [taken] = idle.splice(at, 1);
    this.#claim(model, 1);
    return taken?.credit;
  }

  /**
   * Whether a dispatch for `model` should ask for a credit: fewer held, in use or asked for than
   * the maximum. A `true` counts as held until {@link settle} (`claimed: true`), so concurrent
   * dispatches do not ask for more credits than the api keeps.
   */
  ask(model: string): boolean {
    if (this.#fresh(model).length + (this.#inUse.get(model) ?? 0) >= this.#max) return false;
    this.#claim(model, 1);
    return true;
  }

  /**
   * After a generation: `claimed` when it ran under a credit from {@link take} or asked for one
   * ({@link ask}); `kept` is what the worker keeps now (`GenerateEnd.credit`, with its worker),
   * usable again from now on; `session` the session that ran (its slot holds it now).
   */
  settle(model: string, claimed: boolean, kept: Credit | null | undefined, session: string | null = null): void {
    const next = this.#nextWaiter(model);
    if (next !== undefined) {
      // Someone waits: a kept credit goes straight to it (with its claim); a lost one lets it
      // dispatch through the scheduler (the claim is given up, the waiter may ask for a new one).
      if (kept === null || kept === undefined) {
        if (claimed) this.#claim(model, -1);
        next.resolve(undefined);
      } else {
        if (!claimed) this.#claim(model, 1);
        next.resolve(kept);
      }
      return;
    }
    if (claimed) this.#claim(model, -1);
    if (kept === null || kept === undefined || this.#max === 0) return;
    const idle = this.#fresh(model);
    if (idle.length + (this.#inUse.get(model) ?? 0) >= this.#max) return; // the worker lets it idle out
    idle.push({ credit: kept, since: this.#now(), session });
  }

  /** The next waiter, round-robin across tenants (taken out of the queue). */
  #nextWaiter(model: string): Waiter | undefined {
    const byTenant = this.#waiting.get(model);
    if (byTenant === undefined || byTenant.size === 0) return undefined;
    const tenants = [...byTenant.keys()];
    const last = this.#lastServed.get(model);
    const at = last === undefined ? -1 : tenants.indexOf(last);
    const tenant = tenants[(at + 1) % tenants.length] ?? tenants[0];
    if (tenant === undefined) return undefined;
    const list = byTenant.get(tenant) ?? [];
    const waiter = list.shift();
    if (list.length === 0) byTenant.delete(tenant);
    this.#lastServed.set(model, tenant);
    return waiter;
  }

  /** Per model: credits held (idle, in use or asked for) and requests waiting for one, for status. */
  snapshot(): { model: string; held: number; waiting: number }[] {
    const models = new Set([...this.#idle.keys(), ...this.#inUse.keys(), ...this.#waiting.keys()]);
    return [...models].map((model) => ({
      model,
      held: this.#fresh(model).length + (this.#inUse.get(model) ?? 0),
      waiting: [...(this.#waiting.get(model)?.values() ?? [])].reduce((n, list) => n + list.length, 0),
    }));
  }

  /** Whether `idle` credits plus those in use are every slot of the model's workers. */
  #holdsAll(model: string, idle: number): boolean {
    const slots = this.#slotsOf(model);
    return slots !== undefined && idle + (this.#inUse.get(model) ?? 0) >= slots;
  }

  #claim(model: string, n: number): void {
    this.#inUse.set(model, Math.max(0, (this.#inUse.get(model) ?? 0) + n));
  }

  /** The idle credits of `model` still usable, oldest first (stale ones are dropped). */
  #fresh(model: string): Idle[] {
    let idle = this.#idle.get(model);
    if (idle === undefined) {
      idle = [];
      this.#idle.set(model, idle);
    }
    const cutoff = this.#now() - CREDIT_IDLE_MS / 2;
    let stale = 0;
    while (stale < idle.length && (idle[stale] as Idle).since <= cutoff) stale += 1;
    if (stale > 0) idle.splice(0, stale);
    return idle;
  }
}
