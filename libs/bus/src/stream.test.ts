/**
 * Stream frames and shared inboxes against a real nats-server: how many messages a stream
 * takes, how chunks are coalesced and split, and that sequence checks, cancellation and both
 * liveness probes still work through the muxed inboxes.
 */
import { defineStream, subject } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { connect, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { Bus, type NatsBus } from "./bus.ts";
import { Header, makeHeaders, ProbeKind } from "./codec.ts";
import { BusError } from "./errors.ts";

const Gen = defineStream({
  name: "test.gen",
  subject: (p, q: { id: string }) => subject(p, "test", q.id, "gen"),
  request: z.object({
    count: z.number().int(),
    size: z.number().int().default(1),
    gapMs: z.number().default(0),
    firstAfterMs: z.number().default(0),
  }),
  chunk: z.object({ n: z.number(), text: z.string() }),
  end: z.object({ total: z.number() }),
});

let server: NatsServer;
let caller: NatsBus;
let handler: NatsBus;
let spy: NatsConnection;
const aborted: string[] = [];
/** Request ids whose handler has begun, and those whose first chunk went out. */
const begun: string[] = [];
const firstSent: string[] = [];

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

/** Records every message on the server while `fn` runs (a `>` subscriber on its own connection). */
async function recording(fn: () => Promise<void>): Promise<Msg[]> {
  const seen: Msg[] = [];
  const sub = spy.subscribe(">", { callback: (_e, m) => void seen.push(m) });
  await spy.flush();
  try {
    await fn();
    // Whatever the two connections sent so far has reached the spy once its own round trip is back.
    await Promise.all([caller.nc.flush(), handler.nc.flush()]);
    await spy.flush();
  } finally {
    sub.unsubscribe();
    await spy.flush();
  }
  return seen;
}

/** How many SUB operations a connection has sent so far. */
function subsSent(bus: NatsBus): number {
  return (bus.nc as unknown as { protocol: { subscriptions: { sidCounter: number } } }).protocol.subscriptions.sidCounter;
}

async function collect<T>(call: AsyncIterable<T>): Promise<T[]> {
  const got: T[] = [];
  for await (const c of call) got.push(c);
  return got;
}

beforeAll(async () => {
  server = await startNatsServer({ jetstream: false });
  const options = { servers: server.url, prefix: "s", discoverable: false } as const;
  caller = await Bus.connect({ ...options, service: { name: "caller", version: "0" } });
  handler = await Bus.connect({ ...options, service: { name: "handler", version: "0" } });
  spy = await connect({ servers: server.url });
  const serve = (id: string, extra: { flushMs?: number; maxBatchBytes?: number; startDelayMs?: number } = {}) =>
    handler.serveStream(
      Gen,
      async (req, ctx) => {
        begun.push(ctx.requestId);
        try {
          if (req.firstAfterMs > 0) await sleep(req.firstAfterMs, ctx.signal);
          for (let n = 0; n < req.count; n++) {
            if (n > 0 && req.gapMs > 0) await sleep(req.gapMs, ctx.signal);
            ctx.send({ n, text: "x".repeat(req.size) });
            if (n === 0) firstSent.push(ctx.requestId);
          }
        } catch (err) {
          if (ctx.signal.aborted) aborted.push(ctx.requestId);
          throw err;
        }
        return { total: req.count };
      },
      { params: { id }, ...extra },
    );
  serve("default");
  serve("small-batches", { maxBatchBytes: 16 * 1024 });
  serve("held-start", { startDelayMs: 5000 });
  // A handler that says goodbye on another subject just before its last frame.
  handler.serveStream(
    Gen,
    async (req, ctx) => {
      ctx.beforeEnd(() => handler.nc.publish("s.test.goodbye", new TextEncoder().encode(ctx.requestId)));
      for (let n = 0; n < req.count; n++) {
        if (n > 0 && req.gapMs > 0) await sleep(req.gapMs, ctx.signal);
        ctx.send({ n, text: "x" });
      }
      if (req.size === 0) throw new BusError("conflict", "Refused at the end");
      return { total: req.count };
    },
    { params: { id: "goodbye" } },
  );
  await handler.nc.flush();
});

afterAll(async () => {
  await spy?.close();
  await caller?.close();
  await handler?.close();
  await server?.stop();
});

describe("frames", () => {
  it("sends a one-token stream as ONE message after the request (was four: request, start, chunk, end)", async () => {
    let end: unknown;
    const seen = await recording(async () => {
      const call = caller.callStream(Gen, { count: 1 }, { params: { id: "default" } });
      expect(await collect(call)).toEqual([{ n: 0, text: "x" }]);
      end = await call.result;
    });
    expect(end).toEqual({ total: 1 });
    expect(seen.map((m) => m.subject)).toEqual(["s.test.default.gen", seen[1]?.subject]);
    const frame = seen[1] as Msg;
    expect(frame.headers).toBeUndefined();
    expect(frame.json()).toEqual({ seq: 0, cancel: expect.stringMatching(/^_INBOX\./), chunks: [{ n: 0, text: "x" }], end: { total: 1 } });
    console.info(`one-token stream: ${seen.length} messages on NATS (request + frames)`);
  });

  it("coalesces chunks produced within the caller's window", async () => {
    const seen = await recording(async () => {
      const call = caller.callStream(Gen, { count: 20, gapMs: 2 }, { params: { id: "default" }, flushMs: 1000 });
      expect((await collect(call)).map((c) => c.n)).toEqual([...Array(20).keys()]);
      await expect(call.result).resolves.toEqual({ total: 20 });
    });
    // The start goes with the first chunks (or after its delay); the rest waits up to the window
    // (1 s, far longer than the ~40 ms the 20 chunks take) and joins the end.
    expect(seen.length).toBeLessThanOrEqual(3);
  });

  it("with a 0 ms window still delivers every chunk in order", async () => {
    const call = caller.callStream(Gen, { count: 30, gapMs: 1 }, { params: { id: "default" }, flushMs: 0 });
    expect((await collect(call)).map((c) => c.n)).toEqual([...Array(30).keys()]);
    await expect(call.result).resolves.toEqual({ total: 30 });
  });

  it("splits a large output by size", async () => {
    const seen = await recording(async () => {
      const call = caller.callStream(Gen, { count: 64, size: 1000 }, { params: { id: "small-batches" } });
      const got = await collect(call);
      expect(got.map((c) => c.n)).toEqual([...Array(64).keys()]);
      expect(got.every((c) => c.text.length === 1000)).toBe(true);
      await expect(call.result).resolves.toEqual({ total: 64 });
    });
    const frames = seen.slice(1);
    // ~64 KiB of chunks in batches of at least 16 KiB: four or five frames, none far above the threshold.
    expect(frames.length).toBeGreaterThanOrEqual(4);
    expect(frames.length).toBeLessThanOrEqual(6);
    for (const f of frames) expect(f.data.length).toBeLessThan(16 * 1024 + 1200);
    expect(frames.map((f) => (f.json() as { seq: number }).seq)).toEqual([...frames.keys()]);
  });

  it("detects a lost frame by its sequence number", async () => {
    const Raw = defineStream({ ...Gen, name: "test.raw", subject: (p) => subject(p, "test", "raw") });
    const raw = handler.nc.subscribe(Raw.subject("s", undefined), {
      callback: (_e, m) => {
        const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
        handler.nc.publish(m.reply as string, enc({ seq: 0, cancel: "_INBOX.nobody.1", chunks: [{ n: 0, text: "a" }] }));
        handler.nc.publish(m.reply as string, enc({ seq: 2, chunks: [{ n: 2, text: "c" }] }));
      },
    });
    await handler.nc.flush();
    const call = caller.callStream(Raw, { count: 3 }, {});
    const got: number[] = [];
    const err = await (async () => {
      for await (const c of call) got.push(c.n);
    })().catch((e: unknown) => e);
    expect(got).toEqual([0]);
    expect(err).toMatchObject({ code: "unavailable", message: expect.stringMatching(/lost messages/) });
    raw.unsubscribe();
  });

  it("validates each chunk against the contract", async () => {
    const Raw = defineStream({ ...Gen, name: "test.liar", subject: (p) => subject(p, "test", "liar") });
    const raw = handler.nc.subscribe(Raw.subject("s", undefined), {
      callback: (_e, m) => {
        const body = { seq: 0, chunks: [{ n: 0, text: "ok" }, { n: "one" }], end: { total: 2 } };
        handler.nc.publish(m.reply as string, new TextEncoder().encode(JSON.stringify(body)));
      },
    });
    await handler.nc.flush();
    const call = caller.callStream(Raw, { count: 2 }, {});
    await expect(call.result).rejects.toMatchObject({ code: "bad_reply", message: expect.stringMatching(/Chunk/) });
    raw.unsubscribe();
  });
});

describe("beforeEnd", () => {
  it("runs the handler's hook once, just before the last frame (end or error), whose message it precedes", async () => {
    for (const size of [1, 0]) {
      const seen = await recording(async () => {
        const call = caller.callStream(Gen, { count: 2, size }, { params: { id: "goodbye" } });
        await collect(call).catch(() => {});
        await call.result.catch(() => {});
      });
      const subjects = seen.map((m) => (m.subject.startsWith("_INBOX.") ? "frame" : m.subject));
      expect(subjects).toEqual(["s.test.goodbye.gen", "s.test.goodbye", "frame"]);
      expect(seen[2]?.json()).toMatchObject(size === 1 ? { end: { total: 2 } } : { error: { error: { code: "conflict" } } });
    }
  });

  it("runs the hook when the caller left before the end, though no last frame goes out", async () => {
    const ac = new AbortController();
    const requestId = crypto.randomUUID();
    const goodbyes: string[] = [];
    const sub = spy.subscribe("s.test.goodbye", { callback: (_e, m) => void goodbyes.push(m.string()) });
    await spy.flush();
    const call = caller.callStream(Gen, { count: 1000, gapMs: 20 }, { params: { id: "goodbye" }, signal: ac.signal, requestId });
    await call[Symbol.asyncIterator]().next();
    ac.abort();
    await expect(call.result).rejects.toMatchObject({ code: "cancelled" });
    await expect.poll(() => goodbyes.includes(requestId), { timeout: 5000 }).toBe(true);
    expect(goodbyes.filter((g) => g === requestId)).toHaveLength(1);
    sub.unsubscribe();
  });
});

describe("shared inboxes", () => {
  it("serves and calls many streams without a SUB per stream on either side", async () => {
    await caller.callStream(Gen, { count: 1 }, { params: { id: "default" } }).result; // both muxes exist now
    const before = { caller: subsSent(caller), handler: subsSent(handler) };
    const calls = Array.from({ length: 20 }, () => caller.callStream(Gen, { count: 3 }, { params: { id: "default" } }));
    await Promise.all(calls.map((c) => c.result));
    expect({ caller: subsSent(caller), handler: subsSent(handler) }).toEqual(before);
    expect(caller.streamMux().size).toBe(0);
    expect(handler.streamMux().size).toBe(0);
  });

  it("answers a probe alive for a live token and gone for an unknown or finished one", async () => {
    const mux = caller.streamMux();
    const live = mux.register({ onMessage: () => {}, onProbe: () => true });
    const finished = mux.register({ onMessage: () => {}, onProbe: () => true });
    mux.unregister(finished);
    const ask = (s: string) =>
      caller.nc.request(s, undefined, { timeout: 1000, headers: makeHeaders({ [Header.kind]: ProbeKind.heartbeat }) });
    expect((await ask(live)).headers?.get(Header.kind) ?? "alive").toBe("alive");
    expect((await ask(finished)).headers?.get(Header.kind)).toBe(ProbeKind.gone);
    expect((await ask(`${live}x`)).headers?.get(Header.kind)).toBe(ProbeKind.gone);
    mux.unregister(live);
  });
});

describe("cancellation and liveness", () => {
  it("fails on an abort before the start without waiting for it, then cancels the handler when its start arrives", async () => {
    const ac = new AbortController();
    const requestId = crypto.randomUUID();
    const call = caller.callStream(
      Gen,
      { count: 100, firstAfterMs: 1000, gapMs: 10 },
      { params: { id: "held-start" }, signal: ac.signal, requestId },
    );
    await expect.poll(() => begun.includes(requestId), { timeout: 5000 }).toBe(true);
    ac.abort();
    await expect(call.result).rejects.toMatchObject({ code: "cancelled" });
    // The call failed before the handler's first chunk (and the held start with it) went out.
    expect(firstSent.includes(requestId)).toBe(false);
    await expect.poll(() => aborted.includes(requestId), { timeout: 3000 }).toBe(true);
    await expect.poll(() => caller.streamMux().size, { timeout: 1000 }).toBe(0);
  });

  it("cancels the handler mid-stream", async () => {
    const ac = new AbortController();
    const requestId = crypto.randomUUID();
    const call = caller.callStream(Gen, { count: 1000, gapMs: 20 }, { params: { id: "default" }, signal: ac.signal, requestId });
    let seen = 0;
    const err = await (async () => {
      for await (const _ of call) if (++seen === 3) ac.abort();
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "cancelled" });
    await expect.poll(() => aborted.includes(requestId), { timeout: 2000 }).toBe(true);
  });

  it("tells the handler its caller died (probe answered through the muxes)", async () => {
    const c = await Bus.connect({ servers: server.url, prefix: "s", discoverable: false, service: { name: "mortal", version: "0" } });
    const requestId = crypto.randomUUID();
    const call = c.callStream(Gen, { count: 1000, gapMs: 20 }, { params: { id: "default" }, requestId, idleTimeoutMs: 300 });
    await call[Symbol.asyncIterator]().next();
    c.nc.close(); // no cancel is sent: only the handler's probe can notice
    await expect.poll(() => aborted.includes(requestId), { timeout: 3000 }).toBe(true);
  });

  it("tells the handler its caller finished (the caller's mux answers gone) while its connection lives on", async () => {
    const requestId = crypto.randomUUID();
    // The start is held for 5 s and the first chunk comes after 3 s; the caller gives up after 100 ms.
    const call = caller.callStream(
      Gen,
      { count: 1, firstAfterMs: 3000 },
      { params: { id: "held-start" }, requestId, startTimeoutMs: 100, idleTimeoutMs: 300 },
    );
    await expect(call.result).rejects.toMatchObject({ code: "timeout" });
    await expect.poll(() => aborted.includes(requestId), { timeout: 2000 }).toBe(true);
  });

  it("tells the caller its handler died (probe answered through the muxes), long before the idle timeout", async () => {
    const d = await Bus.connect({ servers: server.url, prefix: "s", discoverable: false, service: { name: "doomed", version: "0" } });
    d.serveStream(
      Gen,
      async (req, ctx) => {
        for (let n = 0; n < req.count && !d.nc.isClosed(); n++) {
          await sleep(30);
          ctx.send({ n, text: "" });
        }
        return { total: req.count };
      },
      { params: { id: "doomed" } },
    );
    await d.nc.flush();
    const call = caller.callStream(Gen, { count: 1000 }, { params: { id: "doomed" }, idleTimeoutMs: 60_000, probeMs: 100 });
    await call[Symbol.asyncIterator]().next();
    d.nc.close(); // gone without an end or an error frame, as a SIGKILLed process
    // `unavailable` comes from the probe; the 60 s idle timeout would have said `timeout`.
    await expect(call.result).rejects.toMatchObject({ code: "unavailable" });
  });

  it("tells the caller when a finished handler's cancel token is probed (gone, not alive)", async () => {
    // A handler that stays connected but whose stream token is gone: the probe says `gone`.
    const Raw = defineStream({ ...Gen, name: "test.ghost", subject: (p) => subject(p, "test", "ghost") });
    const token = handler.streamMux().register({ onMessage: () => {}, onProbe: () => true });
    handler.streamMux().unregister(token);
    const raw = handler.nc.subscribe(Raw.subject("s", undefined), {
      callback: (_e, m) => handler.nc.publish(m.reply as string, new TextEncoder().encode(JSON.stringify({ seq: 0, cancel: token }))),
    });
    await handler.nc.flush();
    const call = caller.callStream(Raw, { count: 1 }, { probeMs: 50, idleTimeoutMs: 60_000 });
    await expect(call.result).rejects.toMatchObject({ code: "unavailable", message: expect.stringMatching(/went away/) });
    raw.unsubscribe();
  });

  it("fails with unavailable when nobody serves the stream", async () => {
    const call = caller.callStream(Gen, { count: 1 }, { params: { id: "missing" }, startTimeoutMs: 3000 });
    await expect(call.result).rejects.toBeInstanceOf(BusError);
    await expect(call.result).rejects.toMatchObject({ code: "unavailable" });
  });
});
