/**
 * The global rate limit holds across api instances (docs/adr/0017-cluster-rate-limits.md): two
 * api instances on one NATS, `ATLAS_RATE_LIMIT_RPM=600`, driven alternately as fast as they
 * answer with one-token completions for about 70 s. A token bucket of one minute admits at most
 * its capacity plus what refilled over the measured interval; the two instances together admit
 * at most 5 % more than that (the bound is 2 × 1.5 batches of 1 % of the limit, see
 * `services/api/src/shared_limits.ts`). Without the shared limit each instance would admit the
 * whole limit on its own: about twice as much.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack, waitFor } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
const RPM = 600;
const RUN_MS = 70_000;
/** Clients sending at once, each to the two instances in turn. */
const CLIENTS = 6;

describe("the global rate limit across two api instances", () => {
  let stack: Stack;
  const urls: string[] = [];
  const logs: string[] = [];
  beforeAll(async () => {
    stack = await startStack({
      services: ["scheduler", "worker", "api"],
      env: { ATLAS_RATE_LIMIT_RPM: String(RPM), ATLAS_LOG_LEVEL: "info" },
      logDestination: { write: (l) => void logs.push(l) },
      logLevel: "info",
    });
    await stack.start("api");
    for (const api of stack.running.get("api") ?? []) {
      urls.push(String((await api.handle.health()).details?.address ?? ""));
    }
    for (const url of urls) await waitFor(async () => (await fetch(`${url}/health`)).status === 200, { what: `${url} up` });
  }, 60_000);
  afterAll(async () => stack?.close());

  it(`admits at most 5 % more than ${RPM} a minute allows, over ~70 s, with 2 instances`, { timeout: RUN_MS + 30_000 }, async () => {
    expect(urls).toHaveLength(2);
    expect(new Set(urls).size).toBe(2);
    const counts = urls.map(() => ({ ok: 0, refused: 0, other: 0 }));
    /** Answers neither 200 nor 429, by status and error code (shown when there are any). */
    const others = new Map<string, number>();
    let refusal: { status: number; retryAfter: string | null; body: unknown } | undefined;
    const start = performance.now();
    const deadline = start + RUN_MS;
    let lastEnd = start;
    const client = async (c: number) => {
      for (let i = c; performance.now() < deadline; i++) {
        const n = i % urls.length;
        const res = await fetch(`${urls[n]}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: MODEL, prompt: "Hi", max_tokens: 1 }),
        });
        const body = await res.json();
        lastEnd = Math.max(lastEnd, performance.now());
        const count = counts[n];
        if (count === undefined) continue;
        if (res.status === 200) count.ok += 1;
        else if (res.status === 429) {
          count.refused += 1;
          refusal ??= { status: res.status, retryAfter: res.headers.get("retry-after"), body };
        } else {
          count.other += 1;
          const what = `${res.status} ${(body as { error?: { code?: string } }).error?.code ?? ""}`;
          others.set(what, (others.get(what) ?? 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
    const seconds = (lastEnd - start) / 1000;
    // The bucket starts full (one minute's worth) and refills at RPM / 60 a second.
    const allowed = RPM + (RPM / 60) * seconds;
    const admitted = counts.reduce((s, c) => s + c.ok, 0);
    const refused = counts.reduce((s, c) => s + c.refused, 0);
    const summary = {
      seconds: Number(seconds.toFixed(1)),
      allowed: Math.floor(allowed),
      admitted,
      refused,
      ratio: Number((admitted / allowed).toFixed(4)),
      perInstance: counts,
    };
    console.log(`limits_cluster: ${JSON.stringify(summary)}`);

    // Neither instance fell back to limiting alone (that would admit up to twice the limit, by design).
    const fallbacks = logs.filter((l) => l.includes("shared rate-limit store does not answer"));
    expect(fallbacks).toEqual([]);
    const failedLogs = logs.filter((l) => l.includes('"Request failed"')).map((l) => l.slice(0, 600));
    expect(Object.fromEntries(others), `answers neither 200 nor 429; the api logged: ${failedLogs.slice(0, 3).join("\n")}`).toEqual({});
    // Both instances were busy past the limit, and both admitted some.
    expect(refused).toBeGreaterThan(admitted);
    expect(counts.every((c) => c.ok > 0 && c.refused > 0)).toBe(true);
    // The bound: at most 5 % over one bucket of RPM; and the bucket was used, not starved (all of
    // its first minute at least).
    expect(admitted).toBeLessThanOrEqual(1.05 * allowed);
    expect(admitted).toBeGreaterThanOrEqual(RPM);
    // The refusal is the usual 429.
    expect(refusal?.body).toEqual({
      error: {
        message: expect.stringMatching(/600 requests per minute/),
        type: "rate_limit_error",
        param: null,
        code: "rate_limit_exceeded",
      },
    });
    expect(Number(refusal?.retryAfter)).toBeGreaterThanOrEqual(1);
  });
});
