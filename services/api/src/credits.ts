/**
 * The slot credits this api instance holds: leases that workers keep for it between requests
 * (docs/scheduler.md, "Slot credits"), so that a sessionless one-sequence request goes
 * api → worker → api without asking the scheduler.
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
 * @module
 */
import { CREDIT_IDLE_MS } from "@atlas/contracts";

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
}

/** The credits of one api instance, by model. */
export class Credits {
  readonly #idle = new Map<string, Idle[]>();
  /** Per model: credits in use, plus dispatches in flight that asked for one. */
  readonly #inUse = new Map<string, number>();
  readonly #max: number;
  readonly #now: () => number;

  /** `max`: credits held at most per model (0: none, every request goes through the scheduler). */
  constructor(max: number, now: () => number = () => performance.now()) {
    this.#max = max;
    this.#now = now;
  }

  /** Takes the freshest usable credit for `model`; end its use with {@link settle} (`claimed: true`). */
  take(model: string): Credit | undefined {
    const last = this.#fresh(model).pop();
    if (last === undefined) return undefined;
    this.#claim(model, 1);
    return last.credit;
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
   * usable again from now on.
   */
  settle(model: string, claimed: boolean, kept: Credit | null | undefined): void {
    if (claimed) this.#claim(model, -1);
    if (kept === null || kept === undefined || this.#max === 0) return;
    const idle = this.#fresh(model);
    if (idle.length + (this.#inUse.get(model) ?? 0) >= this.#max) return; // the worker lets it idle out
    idle.push({ credit: kept, since: this.#now() });
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
