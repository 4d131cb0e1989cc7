/**
 * A client that goes away frees its slot: the abort runs from the HTTP socket through the api,
 * over NATS, into the worker's llama.cpp generation.
 */
import { Health, StatsResponse } from "@atlas/contracts";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;
const MODEL = "atlas-tiny";

beforeAll(async () => {
  stack = await startStack({ services: ["worker", "api"], env: { ATLAS_SLOTS: "1", ATLAS_CTX_SIZE: "16384" } });
  // One request first, so the api knows the model and dispatches the next ones at once.
  await (await post({ model: MODEL, prompt: "warm", max_tokens: 1 })).text();
});

/** True while the worker's one slot is generating. */
async function slotBusy(): Promise<boolean> {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("api is not running");
  const h = await bus.call(Health, {}, { params: { service: "inference-worker", instance: "worker-1" } });
  return h.details?.free_slots === 0;
}
afterAll(async () => stack?.close());

async function generateStats() {
  const bus = stack.running.get("api")?.[0]?.bus;
  if (bus === undefined) throw new Error("api is not running");
  const msg = await bus.nc.request("$SRV.STATS.inference-worker.worker-1", undefined, { timeout: 2000 });
  const stats = StatsResponse.parse(msg.json());
  const direct = stats.endpoints.filter((e) => e.name === "worker.generate");
  return {
    requests: direct.reduce((s, e) => s + e.num_requests, 0),
    errors: direct.reduce((s, e) => s + e.num_errors, 0),
    lastError: direct.map((e) => e.last_error).join(" "),
  };
}

function post(body: unknown, signal?: AbortSignal) {
  return fetch(`${stack.baseUrl}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...(signal === undefined ? {} : { signal }),
  });
}

it("cancels the generation on the worker when the client disconnects, and the one slot serves the next request", async () => {
  const before = await generateStats();
  const ac = new AbortController();
  // 16,000 tokens past EOS: seconds of work for the one slot if nothing stopped it.
  const res = await post({ model: MODEL, prompt: "Once", max_tokens: 16_000, ignore_eos: true, stream: true }, ac.signal);
  expect(res.status).toBe(200);
  const reader = res.body?.getReader();
  await reader?.read();
  ac.abort();

  // The worker's handler ended with a cancellation, not a finished generation.
  await expect.poll(async () => (await generateStats()).errors, { timeout: 5000 }).toBe(before.errors + 1);
  expect((await generateStats()).lastError).toMatch(/cancel|went away/i);

  // The only slot is free again: a short request is served.
  const next = await post({ model: MODEL, prompt: "Hi", max_tokens: 3 });
  expect(next.status).toBe(200);
  const body = (await next.json()) as { choices: { finish_reason: string }[]; usage: { completion_tokens: number } };
  expect(body.usage.completion_tokens).toBeLessThanOrEqual(3);
});

it("cancels a non-streamed request whose client went away", async () => {
  const before = await generateStats();
  const ac = new AbortController();
  const pending = post({ model: MODEL, prompt: "Once", max_tokens: 16_000, ignore_eos: true }, ac.signal).catch((e: unknown) => e);
  await expect.poll(slotBusy, { timeout: 5000, interval: 20 }).toBe(true);
  ac.abort();
  await pending;
  await expect.poll(async () => (await generateStats()).errors, { timeout: 5000 }).toBe(before.errors + 1);
});
