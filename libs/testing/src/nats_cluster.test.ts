/**
 * `startNatsCluster`: three real nats-server processes routed to each other elect a JetStream
 * meta leader; a stream with 3 replicas keeps taking writes while its leader's node is killed
 * (SIGKILL), and the node comes back on the same ports and store and catches up.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsCluster, startNatsCluster } from "./nats_cluster.ts";

let cluster: NatsCluster;
let nc: NatsConnection;

beforeAll(async () => {
  cluster = await startNatsCluster({ nodes: 3 });
});
afterAll(async () => {
  await nc?.close();
  await cluster?.close();
});

/** The `/jsz` stream record of `stream` on node `i`: how many messages that node's replica holds. */
async function messagesOn(i: number, stream: string): Promise<number | undefined> {
  const jsz = (await cluster.jsz(i, "streams=true")) as {
    account_details?: { stream_detail?: { name: string; state: { messages: number } }[] }[];
  };
  const found = (jsz.account_details ?? []).flatMap((a) => a.stream_detail ?? []).find((s) => s.name === stream);
  return found?.state.messages;
}

describe("startNatsCluster", () => {
  it("starts three routed nodes, each with its own URL and store, that agree on a JetStream meta leader", async () => {
    expect(cluster.nodes.map((n) => n.name)).toEqual(["n1", "n2", "n3"]);
    expect(cluster.urls).toEqual(cluster.nodes.map((n) => n.url));
    expect(new Set(cluster.urls).size).toBe(3);
    expect(new Set(cluster.nodes.map((n) => n.storeDir)).size).toBe(3);
    const leader = await cluster.metaLeader();
    expect(["n1", "n2", "n3"]).toContain(leader);
    for (let i = 0; i < 3; i++) {
      const meta = (await cluster.jsz(i)).meta_cluster;
      expect(meta).toMatchObject({ leader, cluster_size: 3 });
    }
  });

  it("keeps a 3-replica stream writable while its leader's node is killed, and brings the node back on its ports and store", async () => {
    nc = await connect({ servers: cluster.urls });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3, storage: "file" });
    const js = jsm.jetstream();
    for (let i = 0; i < 20; i++) await js.publish(`r3.${i}`, "x");
    const leaderName = (await jsm.streams.info("R3")).cluster?.leader;
    const victim = cluster.nodes.findIndex((n) => n.name === leaderName);
    expect(victim).toBeGreaterThanOrEqual(0);
    const { port, pid } = cluster.nodes[victim] ?? { port: 0, pid: 0 };

    await cluster.kill(victim);
    expect(cluster.nodes[victim]?.running).toBe(false);
    // The other two elect a new stream leader; publishes are acknowledged again.
    await expect
      .poll(
        () =>
          js.publish("r3.after", "y", { timeout: 1000 }).then(
            () => "stored",
            (e: Error) => e.message,
          ),
        { timeout: 30_000, interval: 200 },
      )
      .toBe("stored");
    const info = await jsm.streams.info("R3");
    expect(info.cluster?.leader).not.toBe(leaderName);
    expect(info.state.messages).toBe(21);

    await cluster.restart(victim);
    expect(cluster.nodes[victim]).toMatchObject({ port, running: true });
    expect(cluster.nodes[victim]?.pid).not.toBe(pid);
    // Its replica caught up from its own store and the others, and it says it is healthy.
    await expect.poll(() => messagesOn(victim, "R3"), { timeout: 10_000 }).toBe(21);
    await expect.poll(async () => (await cluster.healthz(victim)).body, { timeout: 10_000 }).toContain('"ok"');
    await cluster.waitReady();
  });
});
