/**
 * Which scheduler leads: a claim in KV (`<p>_scheduler_leader`, key `leader`), stepped once per
 * tick by every instance.
 *
 * - The **leader** renews its claim every `renewMs` with a revision-checked update. When the
 *   update is refused (the revision moved: a standby took a stale claim over, or it expired) it
 *   steps down at once. When KV does not answer — the bucket's stream is electing a leader after
 *   a NATS node died, 5–9 s on nats-server 2.9.10 — nobody can take the claim either, so it leads
 *   on, for up to `graceMs` after its last renewal: leases keep being granted from memory.
 * - A **standby** reads the claim each tick. No claim: it creates one. A claim whose revision
 *   has not moved for `staleMs` of reads that all succeeded (the holder stopped renewing while
 *   the bucket answered) is taken over: deleted only if still at that revision, then created. A
 *   read that fails starts the count again, so a stream election never makes a claim look stale.
 * - The bucket's TTL is a backstop above `graceMs` (`claimExpiryMs`).
 *
 * Two leaders at once (a leader cut off from the bucket while a standby takes over) cannot hand
 * a slot out twice: fencing tokens come from blocks reserved in KV and the worker refuses an
 * older token than the newest it saw on a slot (docs/scheduler.md "Durability and failover").
 *
 * @module
 */
import type { Logger } from "@atlas/log";
import type { SchedulerStore } from "./store.ts";

/** When a claim is renewed, counts as stale, and is given up; ms. */
export interface ClaimTiming {
  renewMs: number;
  /** How long one renewal waits for KV: short, so the first renewal after an election comes soon. */
  renewTimeoutMs: number;
  staleMs: number;
  graceMs: number;
}

/** What one step did. */
export type ClaimStep =
  | { type: "idle" }
  /** This instance holds the claim now (created, or taken over from `from`). */
  | { type: "became"; revision: number; from?: string | undefined }
  | { type: "renewed" }
  /** The leader could not reach KV and leads on; `sinceRenewMs` since its last renewal. */
  | { type: "unreachable"; sinceRenewMs: number }
  /** The leader is no longer leader. */
  | { type: "lost"; why: string };

/** The claim's lifecycle for one scheduler instance. */
export class LeaderClaim {
  #revision: number | undefined;
  #lastRenew = 0;
  /** A standby's view of the holder's claim: the revision and when it was first read. */
  #seen: { revision: number; at: number } | undefined;
  /** Since when the leader's renewals get no answer from KV; 0 while they do. */
  #unreachableSince = 0;

  constructor(
    private readonly store: SchedulerStore,
    private readonly instance: string,
    private readonly timing: ClaimTiming,
    private readonly log?: Logger,
  ) {}

  /** Whether the leader's last renewal got no answer from KV (it leads on). */
  get unreachable(): boolean {
    return this.#unreachableSince !== 0;
  }

  /** The claim's revision while this instance leads. */
  get revision(): number | undefined {
    return this.#revision;
  }

  /** Renews (leader) or watches and claims (standby). */
  async step(now: number): Promise<ClaimStep> {
    return this.#revision === undefined ? this.#standby(now) : this.#leader(now, this.#revision);
  }

  async #leader(now: number, revision: number): Promise<ClaimStep> {
    if (now - this.#lastRenew < this.timing.renewMs) return { type: "idle" };
    const r = await this.store.renew(this.instance, revision, this.timing.renewTimeoutMs);
    if (this.#revision !== revision) return { type: "idle" }; // given up meanwhile (stop)
    if (typeof r === "number") {
      this.#revision = r;
      this.#lastRenew = now;
      if (this.#unreachableSince !== 0) this.log?.info({ unreachable_ms: now - this.#unreachableSince }, "Renewed the leader claim again");
      this.#unreachableSince = 0;
      return { type: "renewed" };
    }
    if (r === "lost") return this.#lose("lost the claim: another scheduler holds it, or it expired");
    const sinceRenewMs = now - this.#lastRenew;
    if (sinceRenewMs >= this.timing.graceMs) return this.#lose(`could not renew the claim for ${sinceRenewMs} ms`);
    if (this.#unreachableSince === 0) {
      this.#unreachableSince = now;
      this.log?.warn(
        { since_renew_ms: sinceRenewMs, grace_ms: this.timing.graceMs },
        "Cannot renew the leader claim (KV does not answer: no other scheduler can take it either); leading on",
      );
    }
    return { type: "unreachable", sinceRenewMs };
  }

  async #standby(now: number): Promise<ClaimStep> {
    const held = await this.store.observe();
    if (held === "unreachable") {
      this.#seen = undefined;
      return { type: "idle" };
    }
    if (held !== null && this.#seen?.revision !== held.revision) {
      this.#seen = { revision: held.revision, at: now };
      return { type: "idle" };
    }
    if (held !== null && this.#seen !== undefined && now - this.#seen.at < this.timing.staleMs) return { type: "idle" };
    const revision = held === null ? await this.store.claim(this.instance) : await this.store.steal(this.instance, held.revision);
    if (revision === undefined) return { type: "idle" };
    this.#revision = revision;
    this.#lastRenew = now;
    this.#seen = undefined;
    return { type: "became", revision, from: held?.instance };
  }

  #lose(why: string): ClaimStep {
    this.#revision = undefined;
    this.#seen = undefined;
    this.#unreachableSince = 0;
    return { type: "lost", why };
  }

  /** Gives the claim up: deleted from KV (if still ours), so a standby takes over at once. */
  async resign(): Promise<void> {
    const revision = this.#revision;
    this.#revision = undefined;
    if (revision !== undefined) await this.store.resign(revision);
  }
}
