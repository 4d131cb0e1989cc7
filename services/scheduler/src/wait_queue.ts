/**
 * Requests waiting for a slot: bounded in count and time, served fairly across tenants (one
 * request per tenant in turn, first come first served within a tenant).
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import type { AcquireRequest, LeaseRecord } from "./pool.ts";

/** Most requests that may wait at once; more are refused as overloaded. */
export const MAX_WAITING = 1024;

/** One waiting request. */
export interface Waiter {
  readonly tenant: string;
  readonly request: AcquireRequest;
  readonly deadline: number;
  resolve(leases: LeaseRecord[]): void;
  reject(err: BusError): void;
}

/** The queue of requests waiting for slots. */
export class WaitQueue {
  readonly #byTenant = new Map<string, Waiter[]>();
  #size = 0;
  #turn = 0;

  /** How many wait. */
  get size(): number {
    return this.#size;
  }

  /** Waits for a grant for up to `waitMs`; rejects `overloaded` when the wait runs out. */
  wait(tenant: string, request: AcquireRequest, waitMs: number, signal: AbortSignal): Promise<LeaseRecord[]> {
    if (this.#size >= MAX_WAITING || waitMs === 0) {
      return Promise.reject(new BusError("overloaded", "Every slot is busy", { retryAfterS: 1 }));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        tenant,
        request,
        deadline: Date.now() + waitMs,
        resolve: (l) => {
          this.#remove(waiter);
          resolve(l);
        },
        reject: (e) => {
          this.#remove(waiter);
          reject(e);
        },
      };
      const list = this.#byTenant.get(tenant) ?? [];
      list.push(waiter);
      this.#byTenant.set(tenant, list);
      this.#size += 1;
      signal.addEventListener("abort", () => waiter.reject(new BusError("cancelled", "The caller gave up")), { once: true });
    });
  }

  /** Waiters in fair order: round-robin over tenants, starting with a different one each time. */
  *fairOrder(): Generator<Waiter> {
    const tenants = [...this.#byTenant.keys()];
    if (tenants.length === 0) return;
    this.#turn = (this.#turn + 1) % tenants.length;
    const queues = tenants.map((_, i) => [...(this.#byTenant.get(tenants[(i + this.#turn) % tenants.length] as string) ?? [])]);
    while (queues.some((q) => q.length > 0)) {
      for (const q of queues) {
        const w = q.shift();
        if (w !== undefined) yield w;
      }
    }
  }

  /** Grants a waiter its leases. */
  resolve(waiter: Waiter, leases: LeaseRecord[]): void {
    waiter.resolve(leases);
  }

  /** Refuses waiters whose time ran out. */
  expire(now: number): void {
    for (const list of [...this.#byTenant.values()]) {
      for (const w of [...list]) {
        if (w.deadline <= now) w.reject(new BusError("overloaded", "No slot became free in time", { retryAfterS: 1 }));
      }
    }
  }

  /** Refuses the waiters of one request (its caller gave up); returns how many. */
  cancel(requestId: string, holder: string): number {
    let n = 0;
    for (const list of [...this.#byTenant.values()]) {
      for (const w of [...list]) {
        if (w.request.request_id === requestId && w.request.holder === holder) {
          w.reject(new BusError("cancelled", "The caller gave up"));
          n += 1;
        }
      }
    }
    return n;
  }

  /** Refuses every waiter (the leader steps down). */
  failAll(err: BusError): void {
    for (const list of [...this.#byTenant.values()]) for (const w of [...list]) w.reject(err);
  }

  #remove(waiter: Waiter): void {
    const list = this.#byTenant.get(waiter.tenant);
    if (list === undefined) return;
    const i = list.indexOf(waiter);
    if (i < 0) return;
    list.splice(i, 1);
    this.#size -= 1;
    if (list.length === 0) this.#byTenant.delete(waiter.tenant);
  }
}
