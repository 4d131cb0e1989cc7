/**
 * The leader claim (`leader_claim.ts`) against a real nats-server, two instances on one bucket:
 * a standby waits while the leader renews and takes a claim over that stopped moving; a resigned
 * claim is taken at once; while KV does not answer (the server killed, as during a stream
 * election) the leader leads on and renews the same claim when KV is back, a standby's count of
 * staleness starts again, and a leader that stays cut off gives up after its grace. The clock is
 * a variable, so the outcomes do not depend on the machine's speed.
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { ATLAS_VERSION } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, describe, expect, it } from "vitest";
import { LeaderClaim } from "./leader_claim.ts";
import { SchedulerStore } from "./store.ts";

const timing = { renewMs: 500, renewTimeoutMs: 400, staleMs: 2000, graceMs: 15_000 };
const servers: NatsServer[] = [];
const buses: NatsBus[] = [];

afterAll(async () => {
  for (const b of buses) await b.close().catch(() => {});
  for (const s of servers) await s.stop().catch(() => {});
});

/** A nats-server stopped when the file ends. */
async function started(): Promise<NatsServer> {
  const server = await startNatsServer();
  servers.push(server);
  return server;
}

/**
 * Two schedulers' claims on one bucket of `server` (KV calls time out after 400 ms), after their
 * first steps at 0: `a` leads, `b` has read its claim. Also the standby's store.
 */
async function leaderAndStandby(server: NatsServer, prefix: string): Promise<[LeaderClaim, LeaderClaim, SchedulerStore]> {
  const claims: LeaderClaim[] = [];
  const stores: SchedulerStore[] = [];
  for (const name of ["a", "b"]) {
    const bus = await Bus.connect({
      servers: server.url,
      prefix,
      defaultTimeoutMs: 400,
      service: { name: "scheduler", version: ATLAS_VERSION },
      discoverable: false,
    });
    buses.push(bus);
    const store = await SchedulerStore.open(bus.jetstream, prefix, 20_000);
    stores.push(store);
    claims.push(new LeaderClaim(store, name, timing));
  }
  const [a, b] = claims;
  if (a === undefined || b === undefined || stores[1] === undefined) throw new Error("two claims");
  expect(await a.step(0)).toMatchObject({ type: "became" });
  expect(await b.step(0)).toEqual({ type: "idle" });
  return [a, b, stores[1]];
}

describe("LeaderClaim", () => {
  it("lets a standby wait while the leader renews, and take over a claim that stopped moving", async () => {
    const [a, b] = await leaderAndStandby(await started(), "lc1");
    expect(await a.step(600)).toEqual({ type: "renewed" });
    // The revision moved at 600: the standby's count starts again when it reads it (at 2100).
    expect(await b.step(2100)).toEqual({ type: "idle" });
    expect(await b.step(4000)).toEqual({ type: "idle" });
    // No renewal since: 2,000 ms of a claim that did not move.
    expect(await b.step(4100)).toMatchObject({ type: "became", from: "a" });
    expect(b.revision).toBeTypeOf("number");
    expect(await a.step(4200)).toMatchObject({ type: "lost" });
    expect(a.revision).toBeUndefined();
    expect(await a.step(4300)).toEqual({ type: "idle" });
  });

  it("hands a resigned claim over at once", async () => {
    const [a, b] = await leaderAndStandby(await started(), "lc2");
    await a.resign();
    expect(a.revision).toBeUndefined();
    expect(await b.step(1)).toMatchObject({ type: "became", from: undefined });
  });

  it("leads on while KV does not answer and renews the same claim after; a cut-off leader gives up after its grace", async () => {
    const first = await startNatsServer();
    const [a, b, bStore] = await leaderAndStandby(first, "lc3"); // not stopped at the end: killed, its store reused
    const held = a.revision;

    await first.kill();
    expect(await a.step(600)).toEqual({ type: "unreachable", sinceRenewMs: 600 });
    expect(a.revision).toBeTypeOf("number");
    expect(await b.step(1000)).toEqual({ type: "idle" }); // a failed read: its count starts again

    const second = await startNatsServer({ port: first.port, storeDir: first.storeDir });
    servers.push(second);
    // Back: the standby reads the same revision (last renewed at 0) but counts from now, not
    // from 0 (it would take the claim over at once), and the leader renews the claim it held
    // all along.
    await expect.poll(() => bStore.observe(), { timeout: 15_000, interval: 100 }).toMatchObject({ revision: held, instance: "a" });
    expect(await b.step(5000)).toEqual({ type: "idle" });
    await expect.poll(() => a.step(5000), { timeout: 15_000, interval: 100 }).toEqual({ type: "renewed" });
    expect(await b.step(6900)).toEqual({ type: "idle" });

    // Cut off for longer than the grace: it gives up.
    await second.kill();
    expect(await a.step(5600)).toMatchObject({ type: "unreachable" });
    expect(await a.step(20_000)).toEqual({ type: "lost", why: "could not renew the claim for 15000 ms" });
    expect(a.revision).toBeUndefined();
  });
});
