/**
 * What the api parks in JetStream for persistence is sealed to the transit key when session
 * memory is encrypted at rest (libs/sealed/src/transit.ts), on a real cluster with the generated
 * permissions (the api's user reads the key bucket, writes nothing there):
 *
 * - persistence publishes the transit key's public half in the key bucket at start;
 * - with persistence stopped, an append the api queues in the fallback stream holds no plaintext,
 *   only an envelope sealed to that key, which the api itself cannot open;
 * - once persistence is back it opens and applies the append;
 * - a sealed layer copied into another session's append (subject and fields changed to match) is
 *   refused, not applied: the envelope is bound to its session.
 */
import { randomBytes } from "node:crypto";
import { Health, MemoryAppend, memoryKeysBucket, memoryNames, ServiceName, TRANSIT_KEY_ENTRY } from "@atlas/contracts";
import { readHeader, TransitKeyEntry, transitRecipientId } from "@atlas/sealed";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawMessages } from "./helpers/jetstream.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

const SECRET = "the-lantern-in-the-cellar";

let stack: Stack;
let nc: NatsConnection;
const prefix = () => stack.config.ATLAS_NATS_PREFIX;

beforeAll(async () => {
  stack = await startStack({ services: ["api", "persistence"], env: { ATLAS_MEMORY_KEY: randomBytes(32).toString("base64") } });
  nc = await connect({ servers: stack.nats.url });
}, 120_000);
afterAll(async () => {
  await nc?.close();
  await stack?.close();
});

async function api(method: string, path: string, body?: unknown) {
  const res = await fetch(`${stack.baseUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  // biome-ignore lint/suspicious/noExplicitAny: checked with matchers
  return { status: res.status, json: (await res.json()) as any };
}

/** Every message the fallback stream holds, raw. */
const queued = () => rawMessages(nc, memoryNames(prefix()).stream);

async function appendStats(): Promise<{ applied: number; dropped: number }> {
  const instance = stack.running.get("persistence")?.[0]?.bus.instance ?? "";
  const api = stack.running.get("api")?.[0];
  if (api === undefined) throw new Error("no api running");
  const h = await api.bus.call(Health, {}, { params: { service: ServiceName.persistence, instance } });
  return (h.details as { appends: { applied: number; dropped: number } }).appends;
}

describe("transit sealing of what the api parks for persistence", () => {
  it("queues a sealed append while persistence is down, which persistence opens once back; a copy moved to another session is refused", async () => {
    const kv = await new Kvm(nc).open(memoryKeysBucket(prefix()));
    const published = TransitKeyEntry.parse((await kv.get(TRANSIT_KEY_ENTRY))?.json());
    expect(published.id).toBe("s.transit:1");

    const created = await api("POST", "/v1/atlas/memory/tr-a/layers", { id: "first", messages: [{ role: "user", content: "hello" }] });
    expect(created.status).toBe(202);
    expect(created.json.status).toBe("stored");

    await stack.stop("persistence");
    const down = await api("POST", "/v1/atlas/memory/tr-a/layers", { id: "while-down", messages: [{ role: "user", content: SECRET }] });
    expect(down.status).toBe(202);
    expect(down.json.status).toBe("queued");

    const [held] = await queued();
    expect(held).toBeDefined();
    const message = JSON.parse((held as { data: Buffer }).data.toString());
    expect((held as { data: Buffer }).data.includes(SECRET)).toBe(false);
    expect(message.layer).toBeUndefined();
    const envelope = Buffer.from(message.sealed, "base64");
    const header = readHeader(envelope);
    expect(header.encrypted).toBe(true);
    expect(transitRecipientId(header.keyId as string)).toBe(published.id);

    // The same sealed layer as an append of another session, subject and fields to match.
    const forged = { ...message, session_id: "tr-b" };
    const subjectOf = (session: string) => MemoryAppend.subject(prefix(), { tenant: message.tenant, session_id: session });
    expect(held?.subject).toBe(subjectOf("tr-a"));
    await jetstream(nc).publish(subjectOf("tr-b"), JSON.stringify(forged), { msgID: `forged-${Date.now()}` });
    expect((await queued()).map((m) => m.subject)).toEqual([subjectOf("tr-a"), subjectOf("tr-b")]);

    await stack.start("persistence");
    await expect
      .poll(async () => (await api("GET", "/v1/atlas/memory/tr-a")).json.layers?.map((l: { id: string }) => l.id), {
        timeout: 15_000,
        interval: 200,
      })
      .toEqual(["first", "while-down"]);
    expect((await api("GET", "/v1/atlas/memory/tr-a")).json.layers[1].messages[0].content).toBe(SECRET);
    await expect.poll(async () => (await appendStats()).dropped, { timeout: 10_000, interval: 200 }).toBe(1);
    expect((await api("GET", "/v1/atlas/memory/tr-b")).status).toBe(404);
    // The applied append left the stream (acknowledged); nats-server 2.9 keeps the terminated one.
    expect((await queued()).map((m) => m.subject)).not.toContain(subjectOf("tr-a"));
  });
});
