/**
 * The request path's protocol, counted on the wire (a subscriber on `>`): a one-sequence chat
 * request is dispatched in one hop (api → scheduler → worker, frames straight back to the api),
 * the worker releases the lease one-way, and no lease record is written to KV for it. A batch
 * (`batch_size` 2) still leases its slots together. `npm run bench` counts every subject per
 * request; this test pins the protocol's shape, which does not depend on machine speed.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;
let nc: NatsConnection;
const seen: string[] = [];
/** Reply subjects of the memory messages, by subject kind. */
const replies: Record<string, (string | undefined)[]> = { add: [], log: [] };

beforeAll(async () => {
  stack = await startStack({ services: ["scheduler", "worker", "api", "persistence"] });
  nc = await connect({ servers: stack.nats.url });
  nc.subscribe(">", {
    callback: (_err, msg) => {
      seen.push(msg.subject);
      if (msg.subject.endsWith(".memory.add")) replies.add?.push(msg.reply);
      if (msg.subject.includes(".memory.log.")) replies.log?.push(msg.reply);
    },
  });
  await nc.flush();
}, 60_000);
afterAll(async () => {
  await nc?.close();
  await stack?.close();
});

async function chat(body: Record<string, unknown>) {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "atlas-tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 1, ...body }),
  });
  const json = (await res.json()) as { atlas?: { slots: { fencing_token: number | null }[] } };
  return { status: res.status, degraded: res.headers.get("x-atlas-degraded"), json };
}

/** Messages per subject kind while `run` goes, once the bus is quiet again. */
async function count(run: () => Promise<void>): Promise<Record<string, number>> {
  await nc.flush();
  const from = seen.length;
  await run();
  await nc.flush();
  const out: Record<string, number> = {};
  const p = stack.config.ATLAS_NATS_PREFIX;
  for (const s of seen.slice(from)) {
    const kind = s
      .replace(`${p}.`, "")
      .replace(/^worker\.[^.]+\.generate$/, "worker.<id>.generate")
      .replace(/^_INBOX\..*/, "_INBOX")
      .replace(/^\$KV\.([^.]+)\..*/, "$KV.$1")
      .replace(/^memory\.log\..*/, "memory.log");
    out[kind] = (out[kind] ?? 0) + 1;
  }
  return out;
}

describe("the request path on the wire", () => {
  it("dispatches a one-sequence request in one hop, releases it from the worker, and writes no lease record", async () => {
    const n = 20;
    const results: Awaited<ReturnType<typeof chat>>[] = [];
    const counts = await count(async () => {
      for (let i = 0; i < n; i++) results.push(await chat({ atlas: {} }));
    });
    expect(results.map((r) => [r.status, r.degraded])).toEqual(Array.from({ length: n }, () => [200, null]));
    // Every answer ran under a lease, with a token that only grows.
    const tokens = results.map((r) => r.json.atlas?.slots[0]?.fencing_token ?? null);
    expect(tokens.every((t) => typeof t === "number")).toBe(true);
    expect([...(tokens as number[])].sort((a, b) => a - b)).toEqual(tokens);

    expect(counts["scheduler.dispatch"]).toBe(n);
    expect(counts["worker.<id>.generate"]).toBe(n);
    expect(counts["scheduler.lease.released"]).toBe(n);
    // The two-step protocol is not used for one sequence.
    for (const k of ["scheduler.lease.acquire", "scheduler.lease.release", "scheduler.lease.renew"]) expect(counts[k]).toBeUndefined();
    // No lease record reached KV: each lease began and ended between two write-behind flushes.
    const state = Object.keys(counts).filter((k) => k.includes("scheduler_state"));
    expect(state).toEqual([]);
  });

  it("still leases a batch's slots together, and its worker releases each", async () => {
    const counts = await count(async () => {
      const r = await chat({ n: 2, atlas: { batch_size: 2 } });
      expect(r.status).toBe(200);
      expect(r.json.atlas?.slots.map((s) => typeof s.fencing_token)).toEqual(["number", "number"]);
    });
    expect(counts["scheduler.lease.acquire"]).toBe(1);
    expect(counts["worker.<id>.generate"]).toBe(2);
    expect(counts["scheduler.lease.released"]).toBe(2);
    expect(counts["scheduler.lease.release"]).toBeUndefined();
  });

  it("recalls and appends a session's turn in one exchange each: recall, memory.add, and the layer record JetStream acknowledges to the api", async () => {
    const turn = (i: number) => chat({ messages: [{ role: "user", content: `turn ${i}` }], atlas: { session_id: "wire" } });
    expect((await turn(0)).status).toBe(200); // the first turn's cold read is not counted
    await expect.poll(() => seen.filter((x) => x.includes(".memory.log.")).length, { timeout: 10_000 }).toBe(1);
    const n = 10;
    const counts = await count(async () => {
      const from = seen.length;
      for (let i = 1; i <= n; i++) expect((await turn(i)).status).toBe(200);
      // The append is written after the answer: wait until each turn's record is in the log.
      await expect.poll(() => seen.slice(from).filter((x) => x.includes(".memory.log.")).length, { timeout: 10_000 }).toBe(n);
    });
    const memory = Object.fromEntries(Object.entries(counts).filter(([k]) => k.startsWith("memory.")));
    // Recall: one request (and its reply); append: one request, one record (its ack goes to the api).
    expect(memory).toEqual({ "memory.recall": n, "memory.add": n, "memory.log": n });
    // Each record is published with the reply subject of its memory.add: JetStream acks to the api.
    expect(replies.log?.slice(-n)).toEqual(replies.add?.slice(-n));
    expect(replies.add?.every((r) => r?.startsWith("_INBOX."))).toBe(true);
    const res = await fetch(`${stack.baseUrl}/v1/atlas/memory/wire`);
    expect(((await res.json()) as { layers: unknown[] }).layers).toHaveLength(n + 1);
  });
});
