/**
 * What every scenario gets and returns.
 *
 * @module
 */
import type { BenchModel } from "./models.ts";
import { cpuSeconds, residentMemory } from "./proc.ts";

/** Settings shared by the stack, the engine baseline and llama-server. */
export interface Settings {
  slots: number;
  /** Context per slot, tokens (llama-server gets `-c slots × ctxSize`). */
  ctxSize: number;
  threads: number;
}

/** The run's context. */
export interface BenchContext {
  quick: boolean;
  tmpDir: string;
  settings: Settings;
  models: { tiny: BenchModel; bench: BenchModel };
  /** The llama-server binary of this run (`LLAMA_SERVER_BIN`, or built by `--with-llama-server`); undefined: not in this run. */
  llamaServerBin: string | undefined;
  soakMinutes: number;
  log(message: string): void;
}

/** One target of the issue and whether this run met it. */
export interface Target {
  scenario: string;
  target: string;
  /** null: not measured in this run (e.g. no llama-server binary). */
  met: boolean | null;
  /** One sentence: the figure and why. */
  detail: string;
}

/** What a scenario returns. */
export interface ScenarioResult {
  name: string;
  title: string;
  /** Raw figures for the JSON file. */
  data: unknown;
  /** The markdown section (without its heading). */
  markdown: string;
  targets: Target[];
  /** Headline figures for the summary table. */
  headlines: { figure: string; value: string }[];
  seconds?: number;
}

/** CPU seconds of each process now, to diff after a run. */
export function cpuSnapshot(pids: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p) ?? Number.NaN]));
}

/** CPU milliseconds per request of each process between two snapshots. */
export function cpuPerRequest(before: Record<string, number>, after: Record<string, number>, requests: number): Record<string, number> {
  return Object.fromEntries(Object.keys(before).map((k) => [k, requests > 0 ? ((after[k]! - before[k]!) * 1000) / requests : Number.NaN]));
}

/** Resident memory (MiB) of each process now. */
export function rssSnapshot(pids: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, residentMemory(p)?.rssMiB ?? Number.NaN]));
}

/** A markdown table from a header and rows. */
export function table(header: string[], rows: (string | number)[][], align?: ("l" | "r")[]): string {
  const a = align ?? header.map((_, i) => (i === 0 ? "l" : "r"));
  return [
    `| ${header.join(" | ")} |`,
    `|${a.map((x) => (x === "l" ? "---" : "---:")).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
}
