/**
 * Runs every policy over every trace at every budget and formats the hit ratios as markdown:
 * what the trace tests assert, the cache-policy benchmark reports and `bench.ts` prints.
 *
 * @module
 */
import { type SimulateOptions, type SimulationResult, simulate } from "./cache.ts";
import type { CachePolicy } from "./policy.ts";
import type { Trace } from "./traces.ts";

/** Creates a fresh policy for one simulation, knowing the tier's budget. */
export type PolicyFactory = (budgetBytes: number) => CachePolicy;

/** Options of {@link runBenchmark}. */
export interface BenchmarkOptions {
  readonly traces: readonly Trace[];
  /** Budgets by label, for example `{ L1: 64 MiB }`. */
  readonly budgets: Readonly<Record<string, number>>;
  /** Policies by label. */
  readonly policies: Readonly<Record<string, PolicyFactory>>;
  /** The cost hint passed on each request; see {@link SimulateOptions.cost}. */
  readonly cost?: SimulateOptions["cost"];
}

/** One simulation of a {@link runBenchmark} run. */
export interface BenchmarkRow {
  readonly trace: string;
  readonly budget: string;
  readonly budgetBytes: number;
  readonly policy: string;
  /** The algorithm the policy reported. */
  readonly algorithm: string;
  readonly result: SimulationResult;
}

/** Simulates each policy on each trace at each budget, in that nesting order. */
export function runBenchmark(options: BenchmarkOptions): BenchmarkRow[] {
  const rows: BenchmarkRow[] = [];
  for (const trace of options.traces) {
    for (const [budget, budgetBytes] of Object.entries(options.budgets)) {
      for (const [policy, make] of Object.entries(options.policies)) {
        const instance = make(budgetBytes);
        const result = simulate(trace.requests, instance, {
          budgetBytes,
          ...(options.cost === undefined ? {} : { cost: options.cost }),
        });
        rows.push({ trace: trace.name, budget, budgetBytes, policy, algorithm: instance.algorithm, result });
      }
    }
  }
  return rows;
}

/** Options of {@link benchmarkTable}. */
export interface TableOptions {
  /** Which ratio to show. Default `hitRatio`. */
  readonly metric?: "hitRatio" | "tokenHitRatio";
  /** Bold the best value of each row. Default true. */
  readonly boldBest?: boolean;
}

/** A markdown table: one row per trace and budget, one column per policy, ratios in %. */
export function benchmarkTable(rows: readonly BenchmarkRow[], options: TableOptions = {}): string {
  const metric = options.metric ?? "hitRatio";
  const boldBest = options.boldBest ?? true;
  const policies = [...new Set(rows.map((r) => r.policy))];
  const groups = new Map<string, Map<string, number>>();
  for (const row of rows) {
    const label = `${row.trace} | ${row.budget}`;
    const group = groups.get(label) ?? new Map<string, number>();
    group.set(row.policy, row.result[metric]);
    groups.set(label, group);
  }
  const lines = [`| trace | budget | ${policies.join(" | ")} |`, `|---|---|${policies.map(() => "---:").join("|")}|`];
  for (const [label, values] of groups) {
    const shown = policies.map((p) => values.get(p));
    const best = Math.max(...shown.map((v) => (v === undefined ? -1 : round(v))));
    const cells = shown.map((v) => {
      if (v === undefined) return "";
      const text = (v * 100).toFixed(1);
      return boldBest && round(v) === best ? `**${text}**` : text;
    });
    lines.push(`| ${label} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** Rounds a ratio to the 0.1 % shown, so ties in the table are ties in bold. */
function round(ratio: number): number {
  return Math.round(ratio * 1000);
}
