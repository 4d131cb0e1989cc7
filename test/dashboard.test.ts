/**
 * The live dashboard in a real browser (Debian's headless Chromium through playwright-core)
 * against a real cluster: the page loads its chart library from the api (no CDN), follows the
 * SSE stream, and its charts receive live data after some requests. Saves a screenshot to
 * `test/artifacts/dashboard.png`.
 */
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "./helpers/browser.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), "artifacts");
let stack: Stack;
let browser: Browser;

beforeAll(async () => {
  stack = await startStack({ services: ["metrics", "worker", "api"], env: { ATLAS_METRICS_INTERVAL: "200" } });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await stack?.close();
});

interface DashboardState {
  points: number;
  lastSeq: number | null;
  workers: string[];
  series(chart: string, index: number): (number | null)[];
}

const dashboard = (page: Page) =>
  page.evaluate(() => {
    // Runs in the page (no DOM types here): reach its globals through globalThis.
    const page = globalThis as unknown as {
      atlasDashboard: DashboardState;
      document: { querySelectorAll(selector: string): { length: number } };
    };
    const d = page.atlasDashboard;
    const max = (xs: (number | null)[]) => Math.max(0, ...xs.map((x) => x ?? 0));
    return {
      points: d.points,
      lastSeq: d.lastSeq,
      workers: d.workers,
      requestsPerSecond: max(d.series("requests", 1)),
      tokensPerSecond: max(d.series("tokens", 1)),
      latencyP99: max(d.series("latency", 3)),
      charts: page.document.querySelectorAll(".chart canvas").length,
    };
  });

describe("dashboard", () => {
  it("draws live charts from the SSE stream after requests", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    const problems: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(e.message));
    const external: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(stack.baseUrl)) external.push(r.url());
    });

    const res = await page.goto(`${stack.baseUrl}/dashboard`);
    expect(res?.status()).toBe(200);
    await expect.poll(async () => (await dashboard(page)).points, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
    const before = await dashboard(page);

    for (let i = 0; i < 6; i++) {
      const r = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "atlas-tiny",
          messages: [{ role: "user", content: `Hello ${i}` }],
          max_tokens: 16,
          stream: i % 2 === 0,
        }),
      });
      expect(r.status).toBe(200);
      await r.text();
    }

    await expect.poll(async () => (await dashboard(page)).requestsPerSecond, { timeout: 10_000 }).toBeGreaterThan(0);
    await expect.poll(async () => (await dashboard(page)).workers, { timeout: 10_000 }).toContain("worker-1");
    const after = await dashboard(page);
    expect(after.points).toBeGreaterThan(before.points);
    expect(after.tokensPerSecond).toBeGreaterThan(0);
    expect(after.latencyP99).toBeGreaterThan(0);
    expect(after.charts).toBe(8);
    await expect.poll(() => page.locator("#status").textContent()).toBe("live");
    expect(Number(await page.locator("#points").getAttribute("data-points"))).toBeGreaterThan(0);

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });
    expect(problems).toEqual([]);
    expect(external).toEqual([]);
    await page.close();
  });
});
