/**
 * Fault: nats-server restarts under load (stopped, down for a second, started again on the same
 * port with the same JetStream store). Every service reconnects on its own; no memory write
 * the api acknowledged (a 202 for an append, a 200/201 for an import) is lost; requests during
 * the outage fail cleanly (503/504 in OpenAI's format), never with a crash or a 500.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;

type ErrorBody = { error?: { message: string; type: string; param: string | null; code: string | null } };

async function call(method: string, path: string, body?: unknown) {
  try {
    const res = await fetch(`${stack.baseUrl}${path}`, {
      method,
      ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, degraded: res.headers.get("x-atlas-degraded"), json };
  } catch (err) {
    return { status: 0, degraded: null, json: String(err) };
  }
}

beforeAll(async () => {
  stack = await startStack({ env: { ATLAS_SLOTS: "2" } });
  for (let s = 0; s < 4; s++) {
    const r = await call("PUT", `/v1/atlas/memory/nr-${s}`, {
      version: 1,
      layers: [{ id: "seed", messages: [{ role: "user", content: "seed" }] }],
    });
    expect(r.status).toBe(201);
  }
}, 60_000);
afterAll(async () => stack?.close());

describe("nats-server restarted under load", () => {
  it("reconnects every service and loses no acknowledged memory write", async () => {
    const acked = new Map<string, string[]>(); // session -> acknowledged layer ids
    const imported: string[] = [];
    const statuses: number[] = [];
    const badErrors: unknown[] = [];
    const record = (r: { status: number; json: unknown }) => {
      statuses.push(r.status);
      if (r.status >= 400) {
        const e = (r.json as ErrorBody).error;
        if (r.status === 500 || e === undefined || typeof e.message !== "string" || typeof e.type !== "string") badErrors.push(r.json);
      }
    };
    let stop = false;
    let n = 0;
    const writer = async (lane: number) => {
      while (!stop) {
        const i = n++;
        const session = `nr-${i % 4}`;
        const id = `w${lane}-${i}`;
        const r = await call("POST", `/v1/atlas/memory/${session}/layers`, { id, messages: [{ role: "user", content: `write ${i}` }] });
        record(r);
        if (r.status === 202) acked.set(session, [...(acked.get(session) ?? []), id]);
        if (i % 5 === 0) {
          const put = await call("PUT", `/v1/atlas/memory/imp-${i}`, {
            version: 1,
            layers: [{ messages: [{ role: "user", content: "x" }] }],
          });
          record(put);
          if (put.status === 201 || put.status === 200) imported.push(`imp-${i}`);
        }
      }
    };
    const chatter = async () => {
      while (!stop) {
        const r = await call("POST", "/v1/chat/completions", {
          model: MODEL,
          messages: [{ role: "user", content: "during" }],
          max_tokens: 4,
        });
        record(r);
        if (r.status === 0) await new Promise((res) => setTimeout(res, 100));
      }
    };
    const load = Promise.all([writer(0), writer(1), chatter()]);
    await expect.poll(() => acked.size, { timeout: 10_000 }).toBe(4);

    await stack.restartNats({ downMs: 1000 });

    // Every service reconnects and reports healthy; requests get leases again (not degraded).
    await expect
      .poll(
        async () => {
          const s = (await call("GET", "/v1/atlas/status")).json as { status?: string; missing?: string[] };
          return `${s.status} ${JSON.stringify(s.missing)}`;
        },
        { timeout: 20_000, interval: 250 },
      )
      .toBe("ok []");
    await expect
      .poll(
        async () => {
          const r = await call("POST", "/v1/chat/completions", {
            model: MODEL,
            messages: [{ role: "user", content: "after" }],
            max_tokens: 4,
            atlas: { session_id: "nr-0" },
          });
          return `${r.status} ${r.degraded}`;
        },
        { timeout: 20_000, interval: 250 },
      )
      .toBe("200 null");
    const ackedBefore = [...acked.values()].flat().length;
    await expect.poll(() => [...acked.values()].flat().length, { timeout: 10_000 }).toBeGreaterThan(ackedBefore + 4);
    stop = true;
    await load;

    // No 500s, and every error in OpenAI's format.
    expect(badErrors).toEqual([]);
    expect(statuses.filter((s) => s !== 0 && ![200, 201, 202, 503, 504].includes(s))).toEqual([]);
    // Every acknowledged append and import is there.
    for (const [session, ids] of acked) {
      await expect
        .poll(
          async () => {
            const doc = (await call("GET", `/v1/atlas/memory/${session}`)).json as { layers?: { id: string }[] };
            const have = new Set((doc.layers ?? []).map((l) => l.id));
            return ids.filter((id) => !have.has(id));
          },
          { timeout: 15_000, interval: 250 },
        )
        .toEqual([]);
    }
    for (const id of imported) expect((await call("GET", `/v1/atlas/memory/${id}`)).status).toBe(200);
  });
});
