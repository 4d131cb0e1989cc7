import { Worker } from "node:worker_threads";
import { defineEvent, defineRpc, defineStream, subject } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type Msg } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Bus, type NatsBus } from "./bus.ts";
import { BusError } from "./errors.ts";

const Echo = defineRpc({
  name: "test.echo",
  subject: (p) => subject(p, "test", "echo"),
  request: z.object({ text: z.string().min(1), fail: z.enum(["none", "async", "sync", "busy"]).default("none") }),
  response: z.object({ text: z.string() }),
});
const Slow = defineRpc({
  name: "test.slow",
  subject: (p) => subject(p, "test", "slow"),
  request: z.object({ ms: z.number() }),
  response: z.object({ ok: z.boolean() }),
});
const Count = defineStream({
  name: "test.count",
  subject: (p, q: { id: string }) => subject(p, "test", q.id, "count"),
  request: z.object({ to: z.number().int(), failAt: z.number().int().optional(), delayMs: z.number().default(0) }),
  chunk: z.object({ n: z.number() }),
  end: z.object({ total: z.number() }),
});
const Tick = defineEvent({ name: "test.tick", subject: (p) => subject(p, "test", "tick"), data: z.object({ n: z.number() }) });

let server: NatsServer;
let a: NatsBus;
let b: NatsBus;
const aborted: string[] = [];

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });
}

beforeAll(async () => {
  server = await startNatsServer();
  a = await Bus.connect({ servers: server.url, prefix: "t1", service: { name: "alpha", version: "1.0.0" } });
  b = await Bus.connect({ servers: server.url, prefix: "t1", service: { name: "beta", version: "2.0.0" } });
  a.serve(
    Echo,
    async (req) => {
      if (req.fail === "async") {
        await sleep(5);
        throw new Error("Async handler failed");
      }
      if (req.fail === "sync") throw new TypeError("Sync handler failed");
      if (req.fail === "busy") throw new BusError("overloaded", "Busy", { retryAfterS: 2 });
      return { text: req.text.toUpperCase() };
    },
    {},
  );
  a.serve(
    Slow,
    async (req, ctx) => {
      await sleep(req.ms, ctx.signal);
      return { ok: true };
    },
    {},
  );
  a.serveStream(
    Count,
    async (req, ctx) => {
      try {
        for (let n = 0; n < req.to; n++) {
          if (req.failAt === n) throw new BusError("conflict", `Failed at ${n}`);
          if (req.delayMs > 0) await sleep(req.delayMs, ctx.signal);
          ctx.send({ n });
        }
      } catch (err) {
        if (ctx.signal.aborted) aborted.push(ctx.requestId);
        throw err;
      }
      return { total: req.to };
    },
    { params: { id: "a" } },
  );
  a.serveHealth(() => ({ state: "ok", checks: { self: { ok: true } } }));
  b.serveHealth(() => ({ state: "degraded", checks: { model: { ok: false, detail: "not loaded" } } }));
  // The server has every subscription before any test calls one from the other connection.
  await a.nc.flush();
  await b.nc.flush();
});

afterAll(async () => {
  await a?.close();
  await b?.close();
  await server?.stop();
});

describe("rpc", () => {
  it("answers a valid request with the parsed reply", async () => {
    await expect(b.call(Echo, { text: "hi" })).resolves.toEqual({ text: "HI" });
  });

  it("turns a request that fails validation into a bad_request naming the field", async () => {
    const err = await b.call(Echo, { text: "" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusError);
    expect(err).toMatchObject({ code: "bad_request", param: "text", retryable: false });
  });

  it("turns an async rejection into an error reply, not a timeout", async () => {
    const err = await b.call(Echo, { text: "x", fail: "async" }, { timeoutMs: 4000 }).catch((e: unknown) => e);
    // The error reply came back (a caller that waited it out would have failed with `timeout`).
    expect(err).toMatchObject({ code: "internal", message: "Async handler failed" });
  });

  it("turns a synchronous throw into an error reply", async () => {
    await expect(b.call(Echo, { text: "x", fail: "sync" })).rejects.toMatchObject({ code: "internal" });
  });

  it("keeps the code, retryability and retry hint of a thrown BusError", async () => {
    await expect(b.call(Echo, { text: "x", fail: "busy" })).rejects.toMatchObject({
      code: "overloaded",
      retryable: true,
      retryAfterS: 2,
    });
  });

  it("times out a call that gets no reply in time", async () => {
    await expect(b.call(Slow, { ms: 2000 }, { timeoutMs: 100 })).rejects.toMatchObject({ code: "timeout", retryable: true });
  });

  it("rejects at once with unavailable when nobody serves the subject", async () => {
    const Nobody = defineRpc({ ...Echo, name: "test.nobody", subject: (p) => subject(p, "nobody") });
    await expect(b.call(Nobody, { text: "x" }, { timeoutMs: 3000 })).rejects.toMatchObject({ code: "unavailable" });
  });

  it("stops waiting when the caller aborts", async () => {
    const ac = new AbortController();
    const pending = b.call(Slow, { ms: 1000 }, { signal: ac.signal });
    ac.abort();
    await expect(pending).rejects.toMatchObject({ code: "cancelled" });
  });

  it("rejects a reply that does not match the contract", async () => {
    const Liar = defineRpc({ ...Echo, name: "test.liar", subject: (p) => subject(p, "liar") });
    const Wrong = defineRpc({ ...Liar, response: z.object({ other: z.number() }) });
    const sub = a.serve(Liar, (req) => ({ text: req.text }), {});
    await a.nc.flush(); // the server knows the subscription before the other connection calls
    await expect(b.call(Wrong, { text: "x" })).rejects.toMatchObject({ code: "bad_reply" });
    sub.unsubscribe();
  });
});

describe("rpc answered by a forward", () => {
  const Stored = z.object({ stream: z.string(), seq: z.number(), duplicate: z.boolean().optional() });
  const Store = defineRpc({
    name: "test.store",
    subject: (p) => subject(p, "test", "store"),
    request: z.object({ text: z.string().min(1), refuse: z.boolean().default(false) }),
    response: Stored,
  });

  it("publishes the handler's message with the caller's reply subject: JetStream's ack answers the caller (3 messages)", async () => {
    const jsm = await jetstreamManager(b.nc);
    await jsm.streams.add({ name: "FWD", subjects: ["t1.fwd.>"] });
    const sub = a.serveForward(
      Store,
      async (req) => {
        if (req.refuse) throw new BusError("conflict", "Refused before the forward");
        return { subject: "t1.fwd.x", data: new TextEncoder().encode(req.text), headers: { "Nats-Msg-Id": req.text } };
      },
      {},
    );
    await a.nc.flush();
    const spy = await connect({ servers: server.url });
    const seen: Msg[] = [];
    const all = spy.subscribe("t1.>", { callback: (_e, m) => void seen.push(m) });
    const inbox = spy.subscribe("_INBOX.>", { callback: (_e, m) => void seen.push(m) });
    await spy.flush();
    try {
      await expect(b.call(Store, { text: "one" })).resolves.toEqual({ stream: "FWD", seq: 1 });
      // The same Nats-Msg-Id again: JetStream says duplicate, and stores nothing.
      await expect(b.call(Store, { text: "one" })).resolves.toEqual({ stream: "FWD", seq: 1, duplicate: true });
      await Promise.all([a.nc.flush(), b.nc.flush()]);
      await spy.flush();
      // Per call: the request, the forwarded message, JetStream's ack straight to the caller.
      expect(
        seen
          .map((m) => m.subject)
          .filter((s) => !s.startsWith("_INBOX."))
          .slice(0, 2),
      ).toEqual(["t1.test.store", "t1.fwd.x"]);
      expect(seen.length).toBe(6);
      expect(seen[1]?.reply).toBe(seen[0]?.reply);
      expect(seen[2]?.subject).toBe(seen[0]?.reply);
      expect((await jsm.streams.info("FWD")).state.messages).toBe(1);
      // A refusal before the forward is an ordinary error reply.
      await expect(b.call(Store, { text: "two", refuse: true })).rejects.toMatchObject({
        code: "conflict",
        message: "Refused before the forward",
      });
      expect((await jsm.streams.info("FWD")).state.messages).toBe(1);
    } finally {
      all.unsubscribe();
      inbox.unsubscribe(); // a subscriber on every inbox would answer for "no responders" in later tests
      await spy.close();
      sub.unsubscribe();
    }
  });
});

describe("stream", () => {
  it("delivers every chunk in order, then the end", async () => {
    const call = b.callStream(Count, { to: 50 }, { params: { id: "a" } });
    const got: number[] = [];
    for await (const c of call) got.push(c.n);
    expect(got).toEqual([...Array(50).keys()]);
    await expect(call.result).resolves.toEqual({ total: 50 });
  });

  it("ends with the handler's error after the chunks sent before it", async () => {
    const call = b.callStream(Count, { to: 10, failAt: 3 }, { params: { id: "a" } });
    const got: number[] = [];
    const err = await (async () => {
      for await (const c of call) got.push(c.n);
    })().catch((e: unknown) => e);
    expect(got).toEqual([0, 1, 2]);
    expect(err).toMatchObject({ code: "conflict", message: "Failed at 3" });
    await expect(call.result).rejects.toMatchObject({ code: "conflict" });
  });

  it("rejects an invalid stream request with bad_request", async () => {
    const call = b.callStream(Count, { to: 1.5 } as never, { params: { id: "a" } });
    await expect(call.result).rejects.toMatchObject({ code: "bad_request", param: "to" });
  });

  it("propagates the caller's abort to the handler's signal", async () => {
    const ac = new AbortController();
    const requestId = crypto.randomUUID();
    const call = b.callStream(Count, { to: 1000, delayMs: 20 }, { params: { id: "a" }, signal: ac.signal, requestId });
    let seen = 0;
    const err = await (async () => {
      for await (const _ of call) {
        seen += 1;
        if (seen === 3) ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "cancelled" });
    await expect.poll(() => aborted.includes(requestId), { timeout: 2000 }).toBe(true);
  });

  it("cancels the handler when the caller stops iterating early", async () => {
    const requestId = crypto.randomUUID();
    const call = b.callStream(Count, { to: 1000, delayMs: 10 }, { params: { id: "a" }, requestId });
    for await (const c of call) if (c.n === 2) break;
    await expect.poll(() => aborted.includes(requestId), { timeout: 2000 }).toBe(true);
  });

  it("cancels the handler when the caller's connection goes away", async () => {
    const c = await Bus.connect({ servers: server.url, prefix: "t1", service: { name: "gamma", version: "0" } });
    const requestId = crypto.randomUUID();
    const call = c.callStream(Count, { to: 1000, delayMs: 20 }, { params: { id: "a" }, requestId, idleTimeoutMs: 300 });
    const it = call[Symbol.asyncIterator]();
    await it.next();
    c.nc.close(); // no cancel message is sent: only the heartbeat probe can notice
    await expect.poll(() => aborted.includes(requestId), { timeout: 3000 }).toBe(true);
  });

  it("fails with unavailable soon after the handler's connection dies mid-stream, not after the idle timeout", async () => {
    const d = await Bus.connect({ servers: server.url, prefix: "t1", service: { name: "delta", version: "0" } });
    d.serveStream(
      Count,
      async (req, ctx) => {
        for (let n = 0; n < req.to && !d.nc.isClosed(); n++) {
          await sleep(req.delayMs);
          ctx.send({ n });
        }
        return { total: req.to };
      },
      { params: { id: "dying" } },
    );
    await d.nc.flush();
    const call = b.callStream(Count, { to: 1000, delayMs: 50 }, { params: { id: "dying" }, idleTimeoutMs: 60_000, probeMs: 100 });
    const it = call[Symbol.asyncIterator]();
    await it.next();
    d.nc.close(); // gone without an end or an error message, as a SIGKILLed process
    const failure = await call.result.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failure).toMatchObject({ code: "unavailable" });
  });

  it("keeps a healthy stream alive through many probes", async () => {
    const call = b.callStream(Count, { to: 5, delayMs: 60 }, { params: { id: "a" }, probeMs: 40 });
    const got: number[] = [];
    for await (const c of call) got.push(c.n);
    expect(got).toHaveLength(5);
    await expect(call.result).resolves.toEqual({ total: 5 });
  });

  it("fails with unavailable when nobody serves the stream", async () => {
    const call = b.callStream(Count, { to: 1 }, { params: { id: "missing" }, startTimeoutMs: 2000 });
    await expect(call.result).rejects.toMatchObject({ code: "unavailable" });
  });

  it("fails with timeout when a frozen-but-connected handler never answers", async () => {
    const Frozen = defineStream({ ...Count, name: "test.frozen", subject: (p) => subject(p, "frozen") });
    // A raw subscriber that takes the request and never answers: the frozen-but-connected case.
    const raw = a.nc.subscribe(Frozen.subject("t1", undefined), { callback: () => {} });
    await a.nc.flush(); // the server knows the subscription before the request goes out
    const call = b.callStream(Frozen, { to: 1 }, { startTimeoutMs: 200 });
    await expect(call.result).rejects.toMatchObject({ code: "timeout" });
    raw.unsubscribe();
  });
});

describe("events", () => {
  it("delivers valid events and drops invalid ones", async () => {
    const got: number[] = [];
    const sub = b.subscribe(
      Tick,
      (d) => {
        got.push(d.n);
      },
      {},
    );
    await b.nc.flush();
    a.publish(Tick, { n: 1 });
    a.nc.publish("t1.test.tick", new TextEncoder().encode('{"n":"nope"}'));
    a.nc.publish("t1.test.tick", new TextEncoder().encode("not json"));
    a.publish(Tick, { n: 2 });
    await expect.poll(() => got, { timeout: 2000 }).toEqual([1, 2]);
    sub.unsubscribe();
  });
});

describe("discovery and health", () => {
  it("finds every instance of this prefix and none of another", async () => {
    const other = await Bus.connect({ servers: server.url, prefix: "t2", service: { name: "alpha", version: "9" } });
    const found = await b.discover();
    expect(found.map((i) => `${i.name}@${i.version}`)).toEqual(["alpha@1.0.0", "beta@2.0.0"]);
    expect(found.find((i) => i.name === "alpha")?.endpoints.map((e) => e.name)).toContain("test.echo");
    await other.close();
  });

  it("takes in the answers that arrived within the window while the event loop was busy", async () => {
    // The answering instance runs in a worker thread (its own event loop), so it answers while this
    // thread is blocked past the window; the answer then waits in the socket behind the expired timer.
    const answered = new Int32Array(new SharedArrayBuffer(4)); // set once the server has the answer
    const remote = new Worker(
      `const { workerData, parentPort } = require("node:worker_threads");
      import("@nats-io/transport-node").then(async ({ connect }) => {
        const nc = await connect({ servers: workerData.url });
        const info = { type: "io.nats.micro.v1.info_response", name: "remote", id: "r1", version: "1.0.0",
          metadata: { atlas_prefix: workerData.prefix }, description: "", endpoints: [] };
        nc.subscribe("$SRV.INFO.remote", { callback: async (_err, m) => {
          m.respond(JSON.stringify(info));
          await nc.flush(); // the server has routed the answer
          Atomics.store(workerData.answered, 0, 1);
          Atomics.notify(workerData.answered, 0);
        } });
        await nc.flush();
        parentPort.postMessage("ready");
      });`,
      { eval: true, workerData: { url: server.url, prefix: b.prefix, answered } },
    );
    try {
      await new Promise((ready) => remote.once("message", ready));
      const began = performance.now();
      const found = b.discover({ service: "remote", timeoutMs: 200 });
      await b.nc.flush(); // the question is out
      // Blocked until the answer is on its way to this connection, past the window, and a little
      // longer for the server to write it.
      Atomics.wait(answered, 0, 0, 10_000);
      for (const until = Math.max(began + 200, performance.now()) + 100; performance.now() < until; );
      expect((await found).map((i) => i.id)).toEqual(["r1"]);
    } finally {
      await remote.terminate();
    }
  });

  it("answers $SRV.PING and $SRV.STATS as NATS micro does", async () => {
    const ping = await b.nc.request(`$SRV.PING.alpha`, undefined, { timeout: 1000 });
    expect(ping.json()).toMatchObject({ type: "io.nats.micro.v1.ping_response", name: "alpha", id: a.instance });
    const stats = await b.nc.request(`$SRV.STATS.alpha.${a.instance}`, undefined, { timeout: 1000 });
    const echo = (stats.json() as { endpoints: { name: string; num_requests: number; num_errors: number }[] }).endpoints.find(
      (e) => e.name === "test.echo",
    );
    expect(echo?.num_requests).toBeGreaterThan(0);
    expect(echo?.num_errors).toBeGreaterThan(0);
  });
});

describe("close", () => {
  it("lets an in-flight request finish before the connection drains", async () => {
    const c = await Bus.connect({ servers: server.url, prefix: "t3", service: { name: "closer", version: "0" } });
    c.serve(
      Slow,
      async (req) => {
        await sleep(req.ms);
        return { ok: true };
      },
      {},
    );
    const d = await Bus.connect({ servers: server.url, prefix: "t3", service: { name: "caller", version: "0" } });
    const pending = d.call(Slow, { ms: 200 }, { timeoutMs: 3000 });
    await sleep(50);
    await c.close({ graceMs: 2000 });
    await expect(pending).resolves.toEqual({ ok: true });
    await d.close();
  });
});
