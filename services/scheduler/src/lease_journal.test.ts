/**
 * The write-behind lease journal against a real KV bucket (`SchedulerStore` on a real
 * nats-server): short leases never reach KV, long ones are written once and deleted when they
 * end, restored ones are deleted, a failed write is retried at the next flush, and a drain at
 * stop writes everything.
 */
import { BusJetStream } from "@atlas/bus";
import type { Lease } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LeaseJournal } from "./lease_journal.ts";
import { SchedulerStore } from "./store.ts";

let server: NatsServer;
let nc: NatsConnection;
let store: SchedulerStore;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  store = await SchedulerStore.open(new BusJetStream(nc), `j${crypto.randomUUID().slice(0, 6)}`, 2000);
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

function lease(id: string, token: number): Lease {
  return {
    lease_id: id,
    fencing_token: token,
    worker_id: "w1",
    slot: 0,
    session: null,
    holder: "api",
    granted_at: 1,
    expires_at: 30_001,
    residency: "cold",
    cached_tokens: 0,
    request_id: `r-${id}`,
  };
}

const ids = async () => (await store.leases()).map((l) => l.lease_id).sort();

describe("LeaseJournal", () => {
  it("writes nothing for a lease that begins and ends between two flushes", async () => {
    const j = new LeaseJournal(store, { minAgeMs: 0 });
    j.record(lease("short", 1));
    j.forget("short");
    expect(await j.flush()).toEqual({ put: 0, deleted: 0, skipped: 1, failed: 0 });
    expect(await ids()).toEqual([]);
  });

  it("writes a lease only once it is older than the minimum age", async () => {
    const j = new LeaseJournal(store, { minAgeMs: 1000 });
    j.record(lease("young", 5)); // granted at 1
    expect(await j.flush(500)).toEqual({ put: 0, deleted: 0, skipped: 0, failed: 0 });
    expect(j.pending).toBe(1);
    expect(await j.flush(1001)).toMatchObject({ put: 1 });
    j.forget("young");
    expect(await j.flush(1002)).toMatchObject({ deleted: 1 });
    expect(await ids()).toEqual([]);
  });

  it("writes a lease that outlives a flush, keeps its newest state, and deletes it when it ends", async () => {
    const j = new LeaseJournal(store, { minAgeMs: 0 });
    j.record(lease("long", 2));
    j.record({ ...lease("long", 2), expires_at: 60_000 }); // renewed before the flush: one write
    const flushing = j.flush();
    expect(j.busy).toBe(true);
    expect(j.flush()).toBe(flushing); // a second caller shares the flush in flight
    expect(await flushing).toMatchObject({ put: 1 });
    expect(j.busy).toBe(false);
    expect((await store.leases()).find((l) => l.lease_id === "long")?.expires_at).toBe(60_000);
    j.forget("long");
    expect(await j.flush()).toMatchObject({ deleted: 1 });
    expect(await ids()).toEqual([]);
  });

  it("deletes a lease a previous leader wrote, once adopted", async () => {
    await store.putLease(lease("inherited", 3));
    const j = new LeaseJournal(store, { minAgeMs: 0 });
    j.adopt(lease("inherited", 3));
    j.forget("inherited");
    expect(await j.flush()).toMatchObject({ deleted: 1 });
    expect(await ids()).toEqual([]);
  });

  it("drains after a flush in flight: what changed meanwhile and young leases are written too", async () => {
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const j = new LeaseJournal(
      {
        putLease: async (l) => (l.lease_id === "old" ? gate.then(() => store.putLease(l)) : store.putLease(l)),
        deleteSlot: (w, s) => store.deleteSlot(w, s),
      },
      { minAgeMs: 60_000 },
    );
    j.record(lease("old", 5)); // granted long ago: in the tick's flush, whose write waits on KV
    const ticked = j.flush();
    j.record({ ...lease("young", 6), slot: 1, granted_at: Date.now() }); // after that batch was taken, and young
    const drained = j.drain();
    expect(j.flush()).toBe(ticked); // a plain flush would only join the one in flight
    open();
    expect(await ticked).toMatchObject({ put: 1 });
    expect(await drained).toMatchObject({ put: 1, failed: 0 });
    expect(await ids()).toEqual(["old", "young"]);
    expect(j.pending).toBe(0);
    for (const id of ["old", "young"]) j.forget(id);
    expect(await j.drain()).toMatchObject({ deleted: 2 });
  });

  it("keeps a failed write for the next flush", async () => {
    let fail = true;
    const j = new LeaseJournal(
      {
        putLease: (l) => (fail ? Promise.reject(new Error("KV down")) : store.putLease(l)),
        deleteSlot: (w, s) => store.deleteSlot(w, s),
      },
      { minAgeMs: 0 },
    );
    j.record(lease("retry", 4));
    expect(await j.flush()).toMatchObject({ put: 0, failed: 1 });
    expect(j.pending).toBe(1);
    fail = false;
    expect(await j.flush()).toMatchObject({ put: 1, failed: 0 });
    expect(await ids()).toEqual(["retry"]);
  });
});
