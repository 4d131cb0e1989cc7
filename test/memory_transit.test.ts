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
 *   refused, not applied: the envelope is bound to its session;
 * - a reply too large to travel inline is parked sealed to the caller's reply key (plain for a
 *   caller that sends none); the api sends its key and opens what comes back.
 */
import { randomBytes } from "node:crypto";
import {
  Health,
  MemoryAppend,
  MemoryGet,
  memoryKeysBucket,
  memoryNames,
  REPLY_KEY_ID,
  ServiceName,
  TRANSIT_KEY_ENTRY,
} from "@atlas/contracts";
import { openTransit, readHeader, TransitKeyEntry, transitKeyPair, transitRecipientId } from "@atlas/sealed";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonCall } from "./helpers/http.ts";
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

const api = (method: string, path: string, body?: unknown) => jsonCall(stack.baseUrl, method, path, body);

/** Every message the fallback stream holds, raw. */
const queued = () => rawMessages(nc, memoryNames(prefix()).stream);

async function persistenceDetails(): Promise<{ appends: { applied: number; dropped: number }; at_rest: { transit_key: string | null } }> {
  const instance = stack.running.get("persistence")?.[0]?.bus.instance ?? "";
  const api = stack.running.get("api")?.[0];
  if (api === undefined) throw new Error("no api running");
  const h = await api.bus.call(Health, {}, { params: { service: ServiceName.persistence, instance } });
  return h.details as Awaited<ReturnType<typeof persistenceDetails>>;
}

describe("transit sealing of what the api parks for persistence", () => {
  it("queues a sealed append while persistence is down, which persistence opens once back; a copy moved to another session is refused", async () => {
    const kv = await new Kvm(nc).open(memoryKeysBucket(prefix()));
    const published = TransitKeyEntry.parse((await kv.get(TRANSIT_KEY_ENTRY))?.json());
    expect(published.id).toBe("s.transit:1");
    expect((await persistenceDetails()).at_rest.transit_key).toBe(published.id);

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
    await expect.poll(async () => (await persistenceDetails()).appends.dropped, { timeout: 10_000, interval: 200 }).toBe(1);
    expect((await api("GET", "/v1/atlas/memory/tr-b")).status).toBe(404);
    // Both left the stream: the applied one acknowledged, the refused one deleted (a work queue
    // keeps a terminated message for good).
    await expect.poll(async () => (await queued()).length, { timeout: 5000, interval: 100 }).toBe(0);
  });

  it("parks a large reply sealed to the caller's reply key; the api sends its key and opens the reply", async () => {
    const big = `${SECRET} ${randomBytes(200 * 1024).toString("base64")}`;
    const put = await api("PUT", "/v1/atlas/memory/tr-big", { version: 1, layers: [{ messages: [{ role: "user", content: big }] }] });
    expect(put.status).toBe(201);
    const caller = stack.running.get("api")?.[0]?.bus;
    if (caller === undefined) throw new Error("no api running");
    const objects = await new Objm(nc).open(memoryNames(prefix()).transfer);
    const parked = async (reply: { ref?: { name: string } | undefined }) => {
      const name = reply.ref?.name as string;
      const bytes = Buffer.from((await objects.getBlob(name)) as Uint8Array);
      await objects.delete(name);
      return { name, bytes };
    };

    // Sealed to the key the request names: only its private half opens it.
    const pair = transitKeyPair(REPLY_KEY_ID);
    const sealedReply = await parked(await caller.call(MemoryGet, { tenant: "default", session_id: "tr-big", reply_key: pair.public }));
    expect(sealedReply.bytes.includes(SECRET)).toBe(false);
    const doc = JSON.parse(Buffer.from(await openTransit(sealedReply.bytes, pair.key, sealedReply.name)).toString());
    expect(doc.layers[0].messages[0].content).toBe(big);
    // Without a reply key (an older api), as before: plain JSON.
    const plainReply = await parked(await caller.call(MemoryGet, { tenant: "default", session_id: "tr-big" }));
    expect(plainReply.bytes.includes(SECRET)).toBe(true);

    // The api's own reads: it sends its reply key once it has read the published transit key, and
    // opens what comes back.
    const sent: { reply_key?: string }[] = [];
    const sub = nc.subscribe(MemoryGet.subject(prefix()), {
      callback: (_e, m) => {
        sent.push(m.json());
      },
    });
    await expect
      .poll(
        async () => {
          const r = await api("GET", "/v1/atlas/memory/tr-big");
          expect(r.status).toBe(200);
          expect(r.json.layers[0].messages[0].content).toBe(big);
          return sent.at(-1)?.reply_key;
        },
        { timeout: 10_000, interval: 100 },
      )
      .toMatch(/^[A-Za-z0-9_-]{43}$/);
    sub.unsubscribe();
  });
});
