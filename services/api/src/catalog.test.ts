/**
 * The api's model catalog against a real nats-server and real discovery: a worker that misses
 * discovery rounds stays listed until no round has seen it for `forgetMs` (a starved machine can
 * miss a live worker for a whole round), then its model is forgotten but remembered (a 503, not a
 * 404). The clock is a variable, so no step depends on the machine's speed.
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { ATLAS_VERSION, ServiceName } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelCatalog } from "./catalog.ts";

let nats: NatsServer;
const buses: NatsBus[] = [];

async function connect(name: string, metadata: Record<string, string> = {}): Promise<NatsBus> {
  const bus = await Bus.connect({ servers: nats.url, prefix: "cat", service: { name, version: ATLAS_VERSION }, metadata });
  buses.push(bus);
  return bus;
}

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: false });
});
afterAll(async () => {
  for (const b of buses) await b.close().catch(() => {});
  await nats?.stop();
});

describe("ModelCatalog", () => {
  it("keeps a worker that misses rounds until none has seen it for forgetMs, then remembers its model", async () => {
    const worker = await connect(ServiceName.worker, {
      worker_id: "w1",
      model: "tiny",
      fingerprint: "f",
      created: "1",
      ctx_size: "512",
      slots: "2",
    });
    let t = 1_000_000;
    const catalog = new ModelCatalog(await connect(ServiceName.api), { now: () => t, forgetMs: 6000, refreshMs: 3_600_000 });
    try {
      await catalog.refresh();
      expect(catalog.list()).toMatchObject([{ id: "tiny", workers: ["w1"], slots: 2, ctx_size: 512 }]);

      await worker.close(); // answers no round from now on
      t += 5000;
      await catalog.refresh();
      expect(catalog.list().map((m) => m.id)).toEqual(["tiny"]);
      t += 1001; // 6001 ms since a round last saw it
      await catalog.refresh();
      expect(catalog.list()).toEqual([]);
      expect(catalog.remembers("tiny")).toBe(true);
      expect(catalog.remembers("other")).toBe(false);
    } finally {
      catalog.close();
    }
  });
});
