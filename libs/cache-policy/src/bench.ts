/**
 * Prints the cache-policy tables of `docs/cache-policies.md`:
 * `node --import tsx libs/cache-policy/src/bench.ts [--sweep]`. `--sweep` adds the
 * robustness sweep over 204 workloads (about a minute).
 *
 * @module
 */
import { AdaptiveVariant, createAdaptivePolicy } from "./adaptive.ts";
import { type BenchmarkRow, benchmarkTable, type PolicyFactory, runBenchmark } from "./benchmark.ts";
import { createLfuPolicy } from "./lfu.ts";
import { createLruPolicy } from "./lru.ts";
import { BenchmarkModelWorkload, BytesPerToken, DefaultBudgets, DefaultWorkload, standardTraces, zipfTrace } from "./traces.ts";

const MiB = 1024 * 1024;

/** Every policy and variant, by the column label the docs use. */
export const benchPolicies: Readonly<Record<string, PolicyFactory>> = {
  lru: () => createLruPolicy(),
  lfu: () => createLfuPolicy(),
  "lfu-da": () => createLfuPolicy({ aging: "dynamic" }),
  adaptive: (budgetBytes) => createAdaptivePolicy({ budgetBytes }),
  arc: (budgetBytes) => createAdaptivePolicy({ budgetBytes, variant: AdaptiveVariant.arc }),
  "arc-gdsf": (budgetBytes) => createAdaptivePolicy({ budgetBytes, variant: AdaptiveVariant.arcGdsf }),
  "arc-gds": (budgetBytes) => createAdaptivePolicy({ budgetBytes, variant: AdaptiveVariant.arcGds }),
  gdsf: (budgetBytes) => createAdaptivePolicy({ budgetBytes, variant: AdaptiveVariant.gdsf }),
};

const defaultBudgets = { L1: DefaultBudgets.l1, L2: DefaultBudgets.l2, L3: DefaultBudgets.l3 };

function printTables(title: string, rows: readonly BenchmarkRow[]): void {
  console.log(`\n### ${title}: hit ratio %\n\n${benchmarkTable(rows)}`);
  console.log(`\n### ${title}: token hit ratio % (share of prefill avoided)\n\n${benchmarkTable(rows, { metric: "tokenHitRatio" })}`);
}

/** Zipf hit ratio at the default budgets as the number of sessions (the working set) grows. */
function printSensitivity(): void {
  const lines = [
    "| sessions | KV state | L1 lru / lfu / adaptive | L2 lru / lfu / adaptive | L3 lru / lfu / adaptive |",
    "|---:|---:|---|---|---|",
  ];
  for (const sessions of [500, 1_000, 2_000, 5_000]) {
    const trace = zipfTrace({ ...DefaultWorkload, sessions, requests: 30 * sessions });
    const kv = new Map(trace.requests.map((r) => [r.key, r.sizeBytes]));
    const total = [...kv.values()].reduce((a, b) => a + b, 0);
    const rows = runBenchmark({
      traces: [trace],
      budgets: defaultBudgets,
      policies: { lru: benchPolicies.lru!, lfu: benchPolicies.lfu!, adaptive: benchPolicies.adaptive! },
    });
    const cell = (budget: string) =>
      rows
        .filter((r) => r.budget === budget)
        .map((r) => (r.result.hitRatio * 100).toFixed(1))
        .join(" / ");
    lines.push(`| ${sessions} | ${(total / MiB).toFixed(0)} MiB | ${cell("L1")} | ${cell("L2")} | ${cell("L3")} |`);
  }
  console.log(`\n### Zipf (s = 1.0, 30 requests per session), hit ratio % by working set\n\n${lines.join("\n")}`);
}

/** adaptive against max(lru, lfu) over many workloads: how often and by how much it falls short. */
function printSweep(): void {
  const cases: { label: string; bytesPerToken: number; sessions: number; zipfS: number; requests: number; budget: number; seed: number }[] =
    [];
  for (const seed of [1, 2]) {
    for (const zipfS of [0.8, 1.0, 1.2]) {
      for (const [sessions, mib] of [
        [600, 64],
        [2_000, 64],
        [2_000, 256],
        [5_000, 256],
        [5_000, 1_024],
        [1_000, 32],
        [3_000, 128],
      ] as const) {
        cases.push({
          label: "demo",
          bytesPerToken: BytesPerToken.tiny,
          sessions,
          zipfS,
          requests: Math.max(30_000, sessions * 15),
          budget: mib * MiB,
          seed,
        });
      }
    }
  }
  for (const zipfS of [0.8, 1.0, 1.2]) {
    for (const [sessions, mib] of [
      [100, 1_024],
      [200, 1_024],
      [60, 256],
    ] as const) {
      cases.push({ label: "134M", bytesPerToken: BytesPerToken.m134, sessions, zipfS, requests: 20_000, budget: mib * MiB, seed: 1 });
    }
  }
  const names = ["lru", "lfu", "lfu-da", "adaptive", "arc-gdsf"] as const;
  const sums = Object.fromEntries(names.map((n) => [n, 0])) as Record<(typeof names)[number], number>;
  const short = { adaptive: [] as string[], "arc-gdsf": [] as string[] };
  const belowDa: string[] = [];
  let n = 0;
  for (const c of cases) {
    for (const trace of standardTraces(c)) {
      n++;
      const rows = runBenchmark({
        traces: [trace],
        budgets: { b: c.budget },
        policies: Object.fromEntries(names.map((k) => [k, benchPolicies[k]!])),
      });
      const r = Object.fromEntries(rows.map((row) => [row.policy, row.result.hitRatio])) as Record<(typeof names)[number], number>;
      for (const k of names) sums[k] += r[k];
      const best = Math.max(r.lru, r.lfu);
      const withDa = Math.max(best, r["lfu-da"]);
      if (r.adaptive < withDa) belowDa.push(((r.adaptive - withDa) * 100).toFixed(2));
      for (const k of ["adaptive", "arc-gdsf"] as const) {
        if (r[k] < best)
          short[k].push(
            `${c.label} N=${c.sessions} s=${c.zipfS} ${c.budget / MiB} MiB seed ${c.seed} ${trace.name}: ${((r[k] - best) * 100).toFixed(2)}`,
          );
      }
    }
  }
  console.log(`\n### Sweep: ${n} cases; mean hit ratio %`);
  for (const k of names) console.log(`- ${k}: ${((sums[k] / n) * 100).toFixed(1)}`);
  for (const k of ["adaptive", "arc-gdsf"] as const)
    console.log(`\n${k} below max(lru, lfu) in ${short[k].length} cases:\n${short[k].join("\n")}`);
  console.log(`\nadaptive below max(lru, lfu, lfu-da) in ${belowDa.length} cases, by ${belowDa.join(", ")} points`);
}

function main(): void {
  const started = performance.now();
  printTables(
    "Default workload (demo model, 528 B/token)",
    runBenchmark({ traces: standardTraces(DefaultWorkload), budgets: defaultBudgets, policies: benchPolicies }),
  );
  printTables(
    "Benchmark model (~134M, 36.9 KB/token)",
    runBenchmark({
      traces: standardTraces(BenchmarkModelWorkload),
      budgets: { L2: DefaultBudgets.l2, L3: DefaultBudgets.l3, "L1+L2+L3": DefaultBudgets.l1 + DefaultBudgets.l2 + DefaultBudgets.l3 },
      policies: benchPolicies,
    }),
  );
  const core = { lru: benchPolicies.lru!, lfu: benchPolicies.lfu!, adaptive: benchPolicies.adaptive! };
  printTables(
    "Default workload, cost hint = tokens",
    runBenchmark({ traces: standardTraces(DefaultWorkload), budgets: defaultBudgets, policies: core, cost: "tokens" }),
  );
  printSensitivity();
  if (process.argv.includes("--sweep")) printSweep();
  console.log(`\n(${((performance.now() - started) / 1000).toFixed(1)} s)`);
}

if (import.meta.url === `file://${process.argv[1]}`) main();
