/**
 * `serveRelay` against a real nats-server: a front contract relayed to a back stream handler
 * that answers the original caller directly; the relay's own errors, a target nobody serves,
 * and a caller that gives up while the relay holds its request.
 */
import { defineStream, subject } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { connect, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Bus, type NatsBus } from "./bus.ts";
import { Header } from "./codec.ts";
import { BusError } from "./errors.ts";

const Chunk = z.object({ n: z.number() });
const End = z.object({ total: z.number(), by: z.string() });
/** What the caller asks the relay. */
const Front = defineStream({
  name: "test.front",
  subject: (p) => subject(p, "test", "front"),
  request: z.object({
    count: z.number().int().min(0),
    worker: z.string(),
    refuse: z.boolean().default(false),
    holdMs: z.number().default(0),
    /** Forward even when the caller left while the relay held the request. */
    stubborn: z.boolean().default(false),
  }),
  chunk: Chunk,
  end: End,
});
/** What the relay forwards to a worker. */
const Back = defineStream({
  name: "test.back",
  subject: (p, q: { worker: string }) => subject(p, "test", "worker", q.worker, "back"),
  request: z.object({ count: z.number().int(), gapMs: z.number().default(0) }),
  chunk: Chunk,
  end: End,
});

let server: NatsServer;
let caller: NatsBus;
let relay: NatsBus;
let worker: NatsBus;
let spy: NatsConnection;
const relayAborted: string[] = [];
const relayHolding: string[] = [];
const workerAborted: string[] = [];
const workerSaw: { requestId: string; idle: string | undefined }[] = [];

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

beforeAll(async () => {
  server = await startNatsServer({ jetstream: false });
  const options = { servers: server.url, prefix: "r", discoverable: false } as const;
  caller = await Bus.connect({ ...options, service: { name: "api", version: "0" } });
  relay = await Bus.connect({ ...options, service: { name: "scheduler", version: "0" } });
  worker = await Bus.connect({ ...options, service: { name: "worker", version: "0" } });
  spy = await connect({ servers: server.url });
  relay.serveRelay(
    Front,
    Back,
    async (req, ctx) => {
      if (req.refuse) throw new BusError("overloaded", "No free slot", { retryAfterS: 3 });
      if (req.holdMs > 0) {
        relayHolding.push(ctx.requestId);
        try {
          await sleep(req.holdMs, req.stubborn ? undefined : ctx.signal);
        } catch (err) {
          relayAborted.push(ctx.requestId);
          throw err;
        }
      }
      // The relay may send something else than it got: here the worker gets a 20 ms gap when it held.
      return { params: { worker: req.worker }, request: { count: req.count, gapMs: req.stubborn ? 20 : 0 } };
    },
    { probeMs: 100 },
  );
  worker.serveStream(
    Back,
    async (req, ctx) => {
      workerSaw.push({ requestId: ctx.requestId, idle: ctx.headers?.get(Header.idle) });
      try {
        for (let n = 0; n < req.count; n++) {
          if (req.gapMs > 0) await sleep(req.gapMs, ctx.signal);
          ctx.send({ n });
        }
      } catch (err) {
        if (ctx.signal.aborted) workerAborted.push(ctx.requestId);
        throw err;
      }
      return { total: req.count, by: "w1" };
    },
    { params: { worker: "w1" } },
  );
  await relay.nc.flush();
  await worker.nc.flush();
});

afterAll(async () => {
  await spy?.close();
  await caller?.close();
  await relay?.close();
  await worker?.close();
  await server?.stop();
});

async function outcome<T>(call: AsyncIterable<T> & { result: Promise<unknown> }) {
  const chunks: T[] = [];
  try {
    for await (const c of call) chunks.push(c);
    return { chunks, end: await call.result };
  } catch (error) {
    return { chunks, error };
  }
}

describe("relay", () => {
  it("forwards to the target, which streams straight back to the caller with the caller's request id and idle timeout", async () => {
    const requestId = crypto.randomUUID();
    const seen: Msg[] = [];
    const sub = spy.subscribe(">", { callback: (_e, m) => void seen.push(m) });
    await spy.flush();
    const call = caller.callStream(Front, { count: 3, worker: "w1" }, { requestId, idleTimeoutMs: 12_345 });
    const got = await outcome(call);
    // Everything the three connections sent has reached the spy once its own round trip is back.
    await Promise.all([caller.nc.flush(), relay.nc.flush(), worker.nc.flush()]);
    await spy.flush();
    sub.unsubscribe();
    expect(got).toEqual({ chunks: [{ n: 0 }, { n: 1 }, { n: 2 }], end: { total: 3, by: "w1" } });
    expect(workerSaw.find((w) => w.requestId === requestId)).toEqual({ requestId, idle: "12345" });
    // The request to the relay, the forwarded request, one frame from the worker to the caller.
    expect(seen.map((m) => m.subject)).toEqual(["r.test.front", "r.test.worker.w1.back", seen[2]?.subject]);
    expect(seen[2]?.subject).toBe(seen[0]?.reply);
    expect(seen[1]?.headers?.get(Header.replyTo)).toBe(seen[0]?.reply);
    console.info(`relayed one-hop stream: ${seen.length} messages on NATS`);
  });

  it("turns the relay handler's error into the stream's error", async () => {
    const got = await outcome(caller.callStream(Front, { count: 1, worker: "w1", refuse: true }, {}));
    expect(got.error).toMatchObject({ code: "overloaded", message: "No free slot", retryAfterS: 3, origin: "remote" });
  });

  it("answers an invalid request with bad_request naming the field", async () => {
    const got = await outcome(caller.callStream(Front, { count: -1, worker: "w1" }, {}));
    expect(got.error).toMatchObject({ code: "bad_request", param: "count" });
  });

  it("fails with unavailable when the target has no responders (the 503 goes to the relay, which tells the caller)", async () => {
    // Not the start timeout (that would be `timeout`): the relay passed the no-responders on.
    const got = await outcome(caller.callStream(Front, { count: 1, worker: "nobody" }, { startTimeoutMs: 10_000 }));
    expect(got.error).toMatchObject({ code: "unavailable", message: expect.stringMatching(/r\.test\.worker\.nobody\.back/) });
  });

  it("waits for a relay that holds the request as long as the caller's start timeout allows", async () => {
    const got = await outcome(caller.callStream(Front, { count: 2, worker: "w1", holdMs: 400 }, { startTimeoutMs: 3000 }));
    expect(got).toEqual({ chunks: [{ n: 0 }, { n: 1 }], end: { total: 2, by: "w1" } });
    const late = await outcome(caller.callStream(Front, { count: 2, worker: "w1", holdMs: 1000 }, { startTimeoutMs: 150 }));
    expect(late.error).toMatchObject({ code: "timeout" });
  });

  it("fails when the caller aborts while the relay holds the request, not when the hold ends; the relay's signal fires", async () => {
    const ac = new AbortController();
    const requestId = crypto.randomUUID();
    const call = caller.callStream(
      Front,
      { count: 1, worker: "w1", holdMs: 5000 },
      { signal: ac.signal, requestId, startTimeoutMs: 10_000 },
    );
    await expect.poll(() => relayHolding.includes(requestId), { timeout: 5000 }).toBe(true);
    ac.abort();
    await expect(call.result).rejects.toMatchObject({ code: "cancelled" });
    // The caller did not wait for the relay: the relay was still holding it when the call failed.
    expect(relayAborted.includes(requestId)).toBe(false);
    // The relay's probe of the caller's inbox is answered `gone`.
    await expect.poll(() => relayAborted.includes(requestId), { timeout: 2000 }).toBe(true);
    expect(workerSaw.some((w) => w.requestId === requestId)).toBe(false);
  });

  it("cancels the target when a relay forwards a request whose caller already aborted", async () => {
    const ac = new AbortController();
    const requestId = crypto.randomUUID();
    const call = caller.callStream(
      Front,
      { count: 1000, worker: "w1", holdMs: 1000, stubborn: true },
      { signal: ac.signal, requestId, startTimeoutMs: 10_000 },
    );
    await expect.poll(() => relayHolding.includes(requestId), { timeout: 5000 }).toBe(true);
    ac.abort();
    await expect(call.result).rejects.toMatchObject({ code: "cancelled" });
    // The worker's start reaches the caller, which answers it with a cancel.
    await expect.poll(() => workerAborted.includes(requestId), { timeout: 3000 }).toBe(true);
  });
});
