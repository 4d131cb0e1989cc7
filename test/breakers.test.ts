/**
 * Circuit breakers on the api's downstream services, against a real cluster: a service that
 * goes away opens its breaker after a few failed calls, the api takes the fallback at once
 * (queue-group dispatch, answers without recall, answers without metrics), every degraded
 * answer says so in `x-atlas-degraded`, the breaker's state shows in status and in the
 * Prometheus text, and a half-open probe closes it when the service is back.
 */
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;

beforeAll(async () => {
  // Slot credits off: a request under a live credit never asks the scheduler (it goes straight
  // to the worker that keeps the credit, test/request_path.test.ts), so it would not notice the
  // scheduler is gone; here every request must ask it.
  stack = await startStack({ env: { ATLAS_BREAKER_OPEN_MS: "500", ATLAS_SLOT_CREDITS: "0" } });
  await waitFor(async () => (await fetch(`${stack.baseUrl}/metrics`)).status === 200, { what: "metrics" });
}, 60_000);
afterAll(async () => stack?.close());

async function chat(session?: string) {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 3,
      ...(session === undefined ? {} : { atlas: { session_id: session } }),
    }),
  });
  await res.text();
  return { status: res.status, degraded: res.headers.get("x-atlas-degraded") };
}

async function breaker(name: string): Promise<string> {
  const s = (await (await fetch(`${stack.baseUrl}/v1/atlas/status`)).json()) as { api: { breakers: { name: string; state: string }[] } };
  return s.api.breakers.find((b) => b.name === name)?.state ?? "missing";
}

describe("circuit breakers", () => {
  it("opens the scheduler's breaker when it is gone, serves from the queue group meanwhile, and closes when it is back", async () => {
    expect(await chat()).toEqual({ status: 200, degraded: null });
    await stack.stop("scheduler");
    for (let i = 0; i < 4; i++) expect(await chat()).toEqual({ status: 200, degraded: "scheduler" });
    expect(await breaker("scheduler")).toBe("open");
    await stack.start("scheduler");
    await expect.poll(() => breaker("scheduler"), { timeout: 10_000, interval: 200 }).toBe("closed");
    await expect.poll(async () => (await chat()).degraded, { timeout: 10_000, interval: 200 }).toBeNull();
  });

  it("answers without recall while persistence's breaker is open, and recalls again after it closed", async () => {
    expect((await chat("brk-1")).degraded).toBeNull();
    await stack.stop("persistence");
    for (let i = 0; i < 4; i++) expect(await chat("brk-1")).toEqual({ status: 200, degraded: "memory" });
    expect(await breaker("persistence")).toBe("open");
    await stack.start("persistence");
    await expect.poll(() => breaker("persistence"), { timeout: 10_000, interval: 200 }).toBe("closed");
    expect(await chat("brk-1")).toEqual({ status: 200, degraded: null });
  });

  it("marks answers as degraded while the metrics breaker is open, and shows every breaker in Prometheus", async () => {
    await stack.stop("metrics");
    for (let i = 0; i < 3; i++) expect((await fetch(`${stack.baseUrl}/v1/atlas/metrics`)).status).toBe(503);
    expect(["open", "half_open"]).toContain(await breaker("metrics")); // half-open once its 500 ms ran out
    expect(await chat()).toEqual({ status: 200, degraded: "metrics" });
    await stack.start("metrics");
    await expect.poll(() => breaker("metrics"), { timeout: 10_000, interval: 200 }).toBe("closed");
    expect(await chat()).toEqual({ status: 200, degraded: null });
    const text = await (await fetch(`${stack.baseUrl}/metrics`)).text();
    const families = parsePrometheusTextFormat(text);
    const samples = (name: string) => {
      const family = families.find((f) => f.name === name);
      expect(family, `${name} is missing`).toBeDefined();
      return Object.fromEntries((family?.metrics ?? []).map((m) => [m.labels?.downstream, m.value]));
    };
    expect(samples("atlas_circuit_breaker_state")).toMatchObject({ scheduler: "0", persistence: "0", metrics: "0" });
    // Each of the three opened in the tests above (at least once: a failed half-open trial reopens it).
    const opened = samples("atlas_circuit_breaker_opened_total");
    for (const downstream of ["scheduler", "persistence", "metrics"]) {
      expect(opened[downstream], `opened_total of ${downstream}`).toEqual(expect.stringMatching(/^[1-9]\d*$/));
    }
  });
});
