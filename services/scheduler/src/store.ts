/**
 * What the scheduler keeps in JetStream KV so a new leader can take over: the leader claim (a
 * bucket whose bucket-level TTL expires a claim that is not renewed — nats-server 2.9.10 ignores
 * per-key TTLs — and that standbys take over when they see it go stale, `leader_claim.ts`), the
 * end of the reserved fencing block, and the live leases that lasted long
 * enough to be written (`lease_journal.ts`), one key per slot.
 *
 * @module
 */
import { type BusJetStream, isRevisionConflict, type KV } from "@atlas/bus";
import type { Lease } from "@atlas/contracts";
import { Lease as LeaseSchema, schedulerBuckets } from "@atlas/contracts";

/** Tokens reserved per persisted block: a new leader starts above the old leader's block. */
export const FENCING_BLOCK = 1000;

/** The KV key of a slot's lease record. */
export function leaseKey(workerId: string, slot: number): string {
  return `lease.${workerId}.${slot}`;
}

/** The scheduler's durable state. */
export class SchedulerStore {
  private constructor(
    readonly leader: KV,
    readonly state: KV,
  ) {}

  /**
   * Creates (or opens) the buckets. `claimExpiryMs` is the leader bucket's TTL: the longest an
   * unrenewed claim lives in KV (a backstop: standbys take a claim over sooner, when they see it
   * go stale, `leader_claim.ts`). A bucket an older version created with another TTL gets this one.
   */
  static async open(jetstream: BusJetStream, prefix: string, claimExpiryMs: number): Promise<SchedulerStore> {
    const names = schedulerBuckets(prefix);
    const leader = await jetstream.kv(names.leader, { history: 1, ttl: claimExpiryMs });
    const state = await jetstream.kv(names.state, { history: 1 });
    return new SchedulerStore(leader, state);
  }

  /** Tries to become leader; the claim's revision, or undefined when someone else holds it (or KV did not answer). */
  async claim(instance: string): Promise<number | undefined> {
    try {
      return await this.leader.create("leader", JSON.stringify({ instance, at: Date.now() }));
    } catch {
      return undefined;
    }
  }

  /**
   * Renews the claim: its new revision; `lost` when the revision moved or the claim is gone
   * (another scheduler took it, or it expired); `unreachable` when KV did not answer (no
   * connection, or the bucket's stream is electing a leader, within `timeoutMs`): nobody else can
   * take it meanwhile.
   */
  async renew(instance: string, revision: number, timeoutMs?: number): Promise<number | "lost" | "unreachable"> {
    try {
      return await this.leader.update("leader", JSON.stringify({ instance, at: Date.now() }), revision, timeoutMs);
    } catch (err) {
      return isRevisionConflict(err) ? "lost" : "unreachable";
    }
  }

  /** The claim as KV holds it now: its revision and holder, `null` when there is none, `unreachable` when KV did not answer. */
  async observe(): Promise<{ revision: number; instance: string | undefined } | null | "unreachable"> {
    try {
      const e = await this.leader.get("leader");
      if (e === null || e.operation !== "PUT") return null;
      let instance: string | undefined;
      try {
        instance = (e.json() as { instance?: string }).instance;
      } catch {
        instance = undefined;
      }
      return { revision: e.revision, instance };
    } catch {
      return "unreachable";
    }
  }

  /**
   * Takes over a stale claim: deletes it only if it is still at `revision` (its holder did not
   * renew it since), then claims. The new claim's revision, or undefined when the holder renewed
   * it meanwhile or another standby was quicker.
   */
  async steal(instance: string, revision: number): Promise<number | undefined> {
    try {
      await this.leader.delete("leader", { previousSeq: revision });
    } catch {
      return undefined;
    }
    return this.claim(instance);
  }

  /** Gives the claim up (clean shutdown), so a standby takes over at once. */
  async resign(revision: number): Promise<void> {
    await this.leader.delete("leader", { previousSeq: revision }).catch(() => {});
  }

  /** Reserves the next fencing block; returns [start, end): tokens start+1..end are ours. */
  async reserveFencing(): Promise<{ start: number; end: number }> {
    for (;;) {
      const e = await this.state.get("fencing");
      const start = e === null || e.operation !== "PUT" ? 0 : Number(e.string());
      const end = start + FENCING_BLOCK;
      try {
        if (e === null || e.operation !== "PUT") await this.state.create("fencing", String(end));
        else await this.state.update("fencing", String(end), e.revision);
        return { start, end };
      } catch {
        // another writer moved it: read again
      }
    }
  }

  /** Records the lease that holds a slot (one key per slot: `lease.<worker>.<slot>`). */
  async putLease(lease: Lease): Promise<void> {
    await this.state.put(leaseKey(lease.worker_id, lease.slot), JSON.stringify(lease));
  }

  /** Removes a slot's lease record. */
  async deleteSlot(workerId: string, slot: number): Promise<void> {
    await this.state.delete(leaseKey(workerId, slot));
  }

  /** Every lease a previous leader left. */
  async leases(): Promise<Lease[]> {
    const out: Lease[] = [];
    const keys = await this.state.keys("lease.>");
    for await (const k of keys) {
      const e = await this.state.get(k);
      if (e === null || e.operation !== "PUT") continue;
      const parsed = LeaseSchema.safeParse(e.json());
      if (parsed.success) out.push(parsed.data);
    }
    return out;
  }
}
