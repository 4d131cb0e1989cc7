/**
 * The request path's protocol, counted on the wire (a subscriber on `>`): sessionless requests
 * in a row go api → worker → api under a slot credit after the first (which is dispatched by the
 * scheduler and asks for the credit), and the worker gives the credit back once idle; a
 * session's quick turns go the same way, to the slot that holds the session; with
 * credits off (`ATLAS_SLOT_CREDITS=0`) a one-sequence request is dispatched in one hop (api →
 * scheduler → worker, frames straight back to the api), the worker releases the lease one-way,
 * and no lease record is written to KV for it. A batch (`batch_size` 2) still leases its slots
 * together. `npm run bench` counts every subject per request; this test pins the protocol's
 * shape, which does not depend on machine speed.
 */
import { CREDIT_IDLE_MS, SchedulerState } from "@atlas/contracts";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

/** A stack with a subscriber on `>`: what each request puts on the wire. */
class Wire {
  readonly seen: string[] = [];
  /** Reply subjects of the memory messages, by subject kind. */
  readonly replies: Record<string, (string | undefined)[]> = { add: [], log: [] };
  private constructor(
    readonly stack: Stack,
    readonly nc: NatsConnection,
  ) {}

  static async start(services: Parameters<typeof startStack>[0]): Promise<Wire> {
    const stack = await startStack(services);
    const wire = new Wire(stack, await connect({ servers: stack.nats.url }));
    wire.nc.subscribe(">", {
      callback: (_err, msg) => {
        wire.seen.push(msg.subject);
        if (msg.subject.endsWith(".memory.add")) wire.replies.add?.push(msg.reply);
        if (msg.subject.includes(".memory.log.")) wire.replies.log?.push(msg.reply);
      },
    });
    await wire.nc.flush();
    return wire;
  }

  async close(): Promise<void> {
    await this.nc.close();
    await this.stack.close();
  }

  async chat(body: Record<string, unknown>) {
    const res = await fetch(`${this.stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "atlas-tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 1, ...body }),
    });
    const json = (await res.json()) as { atlas?: { slots: { fencing_token: number | null }[] } };
    return { status: res.status, degraded: res.headers.get("x-atlas-degraded"), json };
  }

  /** `n` sessionless one-token chats one after the other, every one answered undegraded, and what they put on the wire. */
  async inARow(n: number): Promise<{ results: Chat[]; counts: Record<string, number> }> {
    const results: Chat[] = [];
    const counts = await this.count(async () => {
      for (let i = 0; i < n; i++) results.push(await this.chat({ atlas: {} }));
    });
    expect(results.map((r) => [r.status, r.degraded])).toEqual(Array.from({ length: n }, () => [200, null]));
    return { results, counts };
  }

  /** Messages per subject kind while `run` goes, once the bus is quiet again. */
  async count(run: () => Promise<void>): Promise<Record<string, number>> {
    await this.nc.flush();
    const from = this.seen.length;
    await run();
    await this.nc.flush();
    const out: Record<string, number> = {};
    const p = this.stack.config.ATLAS_NATS_PREFIX;
    for (const s of this.seen.slice(from)) {
      const kind = s
        .replace(`${p}.`, "")
        .replace(/^worker\.[^.]+\.(generate|control)$/, "worker.<id>.$1")
        .replace(/^_INBOX\..*/, "_INBOX")
        .replace(/^\$KV\.([^.]+)\..*/, "$KV.$1")
        .replace(/^memory\.log\..*/, "memory.log");
      out[kind] = (out[kind] ?? 0) + 1;
    }
    return out;
  }
}

type Chat = Awaited<ReturnType<Wire["chat"]>>;

describe("the request path on the wire", () => {
  let wire: Wire;
  beforeAll(async () => {
    wire = await Wire.start({ services: ["scheduler", "worker", "api", "persistence"] });
  }, 60_000);
  afterAll(async () => {
    await wire?.close();
  });

  it("sends sessionless requests in a row straight to the worker under one slot credit, which the worker gives back once idle", async () => {
    const n = 20;
    const { results, counts } = await wire.inARow(n);
    // Every answer ran under a lease: the first was dispatched and asked for a credit; the rest
    // ran under that credit, the same lease.
    const tokens = results.map((r) => r.json.atlas?.slots[0]?.fencing_token ?? null);
    expect(typeof tokens[0]).toBe("number");
    expect(tokens).toEqual(Array.from({ length: n }, () => tokens[0]));

    expect(counts["scheduler.dispatch"]).toBe(1);
    expect(counts["worker.<id>.generate"]).toBe(n);
    // Nothing released while the credit is in use, and nothing else asked of the scheduler.
    for (const k of ["scheduler.lease.released", "scheduler.lease.acquire", "scheduler.lease.release", "scheduler.lease.renew"]) {
      expect(counts[k]).toBeUndefined();
    }
    // At most the credit's own lease record reached KV (a put, per credit, not per request).
    const state = Object.entries(counts).filter(([k]) => k.includes("scheduler_state"));
    expect(state.reduce((sum, [, v]) => sum + v, 0)).toBeLessThanOrEqual(1);

    // Idle for the credit idle time: the worker gives the lease back, and the pool holds none.
    const idle = await wire.count(() => new Promise((r) => setTimeout(r, CREDIT_IDLE_MS + 500)));
    expect(idle["scheduler.lease.released"]).toBe(1);
    const api = wire.stack.running.get("api")?.[0];
    if (api === undefined) throw new Error("the api is not running");
    const pool = await api.bus.call(SchedulerState, {}, { timeoutMs: 2000 });
    expect(pool.leases).toBe(0);
  });

  it("recalls and appends a session's turn in one exchange each: recall, memory.add, and the layer record JetStream acknowledges to the api", async () => {
    const turn = (i: number) => wire.chat({ messages: [{ role: "user", content: `turn ${i}` }], atlas: { session_id: "wire" } });
    expect((await turn(0)).status).toBe(200); // the first turn's cold read is not counted
    await expect.poll(() => wire.seen.filter((x) => x.includes(".memory.log.")).length, { timeout: 10_000 }).toBe(1);
    const n = 10;
    const counts = await wire.count(async () => {
      const from = wire.seen.length;
      for (let i = 1; i <= n; i++) expect((await turn(i)).status).toBe(200);
      // The append is written after the answer: wait until each turn's record is in the log.
      await expect.poll(() => wire.seen.slice(from).filter((x) => x.includes(".memory.log.")).length, { timeout: 10_000 }).toBe(n);
    });
    const memory = Object.fromEntries(Object.entries(counts).filter(([k]) => k.startsWith("memory.")));
    // Recall: one request (and its reply); append: one request, one record (its ack goes to the api).
    expect(memory).toEqual({ "memory.recall": n, "memory.add": n, "memory.log": n });
    // Each record is published with the reply subject of its memory.add: JetStream acks to the api.
    expect(wire.replies.log?.slice(-n)).toEqual(wire.replies.add?.slice(-n));
    expect(wire.replies.add?.every((r) => r?.startsWith("_INBOX."))).toBe(true);
    const res = await fetch(`${wire.stack.baseUrl}/v1/atlas/memory/wire`);
    expect(((await res.json()) as { layers: unknown[] }).layers).toHaveLength(n + 1);
  });

  it("sends a session's quick turns straight to the slot that holds it, under the credit its first turn left, with its state reused", async () => {
    const turn = async (i: number) => {
      const res = await fetch(`${wire.stack.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "atlas-tiny",
          messages: [{ role: "user", content: `quick turn ${i}` }],
          max_tokens: 1,
          atlas: { session_id: "quick" },
        }),
      });
      expect(res.status).toBe(200);
      const json = (await res.json()) as {
        usage: { prompt_tokens_details?: { cached_tokens?: number } };
        atlas: { slots: { fencing_token: number | null }[] };
      };
      return { cached: json.usage.prompt_tokens_details?.cached_tokens ?? 0, token: json.atlas.slots[0]?.fencing_token };
    };
    await new Promise((r) => setTimeout(r, CREDIT_IDLE_MS + 200)); // earlier tests' credits are gone
    const n = 6;
    const results: Awaited<ReturnType<typeof turn>>[] = [];
    const counts = await wire.count(async () => {
      for (let i = 0; i < n; i++) results.push(await turn(i));
    });
    // The first turn is dispatched (and asks for a credit); the rest run under that credit.
    expect(counts["scheduler.dispatch"]).toBe(1);
    expect(counts["worker.<id>.generate"]).toBe(n);
    expect(new Set(results.map((r) => r.token)).size).toBe(1);
    // The slot held the conversation: every later turn reused the earlier turns' tokens.
    expect(results.slice(1).every((r) => r.cached > 0)).toBe(true);
    // A sessionless request meanwhile takes its own credit, not the conversation's slot.
    const other = await wire.chat({ atlas: {} });
    expect(other.json.atlas?.slots[0]?.fencing_token).not.toBe(results[0]?.token);
    expect((await turn(n)).token).toBe(results[0]?.token);
  });

  it("at twice the slots' concurrency, runs on the api's credits once it holds every slot, without the scheduler", async () => {
    const lanes = 8; // the stack's worker has 4 slots
    const perLane = 10;
    const statuses: number[] = [];
    const counts = await wire.count(async () => {
      await Promise.all(
        Array.from({ length: lanes }, async () => {
          for (let i = 0; i < perLane; i++) statuses.push((await wire.chat({ atlas: {} })).status);
        }),
      );
    });
    expect(statuses).toEqual(Array.from({ length: lanes * perLane }, () => 200));
    expect(counts["worker.<id>.generate"]).toBe(lanes * perLane);
    // The api asks for a credit per slot (4), the rest waits for them at the api: few dispatches.
    expect(counts["scheduler.dispatch"] ?? 0).toBeLessThanOrEqual(8);
    expect(counts["worker.<id>.control"]).toBeUndefined(); // nothing was revoked: no one waited at the scheduler
  });

  it("a session's turn is not starved by a saturating sessionless load: the credits are revoked, and the load goes on", async () => {
    let stop = false;
    const statuses: number[] = [];
    const counts = await wire.count(async () => {
      const load = Promise.all(
        Array.from({ length: 8 }, async () => {
          while (!stop) statuses.push((await wire.chat({ atlas: {} })).status);
        }),
      );
      await new Promise((r) => setTimeout(r, 200)); // the api holds every slot by now
      for (let turn = 0; turn < 3; turn++) {
        const r = await wire.chat({ messages: [{ role: "user", content: `busy turn ${turn}` }], atlas: { session_id: "amid-load" } });
        expect(r.status).toBe(200);
      }
      stop = true;
      await load;
    });
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((x) => x === 200)).toBe(true);
    // The session's requests waited at the scheduler, which asked the api's credits back.
    expect(counts["worker.<id>.control"] ?? 0).toBeGreaterThan(0);
  });

  it("serves sessionless requests under a live credit while the scheduler is gone, undegraded", async () => {
    expect((await wire.chat({ atlas: {} })).status).toBe(200); // a credit is live
    await wire.stack.stop("scheduler");
    const counts = await wire.count(async () => {
      for (let i = 0; i < 5; i++) expect(await wire.chat({ atlas: {} })).toMatchObject({ status: 200, degraded: null });
    });
    expect(counts["scheduler.dispatch"]).toBeUndefined();
    expect(counts["worker.<id>.generate"]).toBe(5);
    // (Once the credit has idled out, requests find no scheduler and take the queue group:
    // test/breakers.test.ts. Not here: this file's subscriber on `>` hides "no responders".)
  });
});

describe("the request path on the wire, slot credits off", () => {
  let wire: Wire;
  beforeAll(async () => {
    wire = await Wire.start({ services: ["scheduler", "worker", "api"], env: { ATLAS_SLOT_CREDITS: "0" } });
  }, 60_000);
  afterAll(async () => {
    await wire?.close();
  });

  it("dispatches a one-sequence request in one hop, releases it from the worker, and writes no lease record", async () => {
    const n = 20;
    const { results, counts } = await wire.inARow(n);
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
    const counts = await wire.count(async () => {
      const r = await wire.chat({ n: 2, atlas: { batch_size: 2 } });
      expect(r.status).toBe(200);
      expect(r.json.atlas?.slots.map((s) => typeof s.fencing_token)).toEqual(["number", "number"]);
    });
    expect(counts["scheduler.lease.acquire"]).toBe(1);
    expect(counts["worker.<id>.generate"]).toBe(2);
    expect(counts["scheduler.lease.released"]).toBe(2);
    expect(counts["scheduler.lease.release"]).toBeUndefined();
  });
});
