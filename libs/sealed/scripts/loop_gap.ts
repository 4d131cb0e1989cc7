/**
 * How long sealing a large payload holds the event loop: `node --import tsx
 * libs/sealed/scripts/loop_gap.ts`.
 *
 * Random bytes (as incompressible as the bench model's KV state, so codec `none`) of 11 and
 * 75 MB, encrypted, sealed and opened in one piece (`seal`/`open`) and in slices
 * (`sealLarge`/`openLarge`), 5 runs each. A 1 ms interval timer runs meanwhile; the longest gap
 * between two of its callbacks is how long the loop was held (a worker's streams wait that
 * long). Prints the medians. ADR 0018 has a result.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { LARGE_ENVELOPE_BYTES, open, openLarge, seal, sealLarge } from "../src/envelope.ts";

const key = { id: "s.kvstate:1", key: randomBytes(32) };
const options = { codec: "none" as const, key, context: "x" };

/** How long `work` took, and the longest gap of a 1 ms timer meanwhile (ms). */
async function measure(work: () => unknown): Promise<{ took: number; gap: number }> {
  let gap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    gap = Math.max(gap, now - last);
    last = now;
  }, 1);
  await new Promise((r) => setTimeout(r, 30));
  gap = 0;
  const start = performance.now();
  await work();
  const took = performance.now() - start;
  await new Promise((r) => setTimeout(r, 30));
  clearInterval(timer);
  return { took, gap };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

console.log(`| payload | call | took (ms) | longest loop gap (ms) |\n|---|---|---:|---:|`);
for (const mb of [11, 75]) {
  const data = randomBytes(mb * 1024 * 1024);
  const sealed = seal(data, options);
  const calls: [string, () => unknown][] = [
    ["seal", () => seal(data, options)],
    [`sealLarge (${LARGE_ENVELOPE_BYTES / 1024 / 1024} MiB slices)`, () => sealLarge(data, options)],
    ["open", () => open(sealed, () => key.key, "x")],
    ["openLarge", () => openLarge(sealed, () => key.key, "x")],
  ];
  for (const [name, work] of calls) {
    const runs: { took: number; gap: number }[] = [];
    for (let i = 0; i < 5; i++) runs.push(await measure(work));
    console.log(`| ${mb} MB | ${name} | ${median(runs.map((r) => r.took)).toFixed(0)} | ${median(runs.map((r) => r.gap)).toFixed(1)} |`);
  }
}
