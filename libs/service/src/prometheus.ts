/**
 * A writer of the Prometheus text exposition format (version 0.0.4), for the two places that
 * expose metrics: the metrics service (the cluster's totals, windows and histograms,
 * `services/metrics/src/prometheus.ts`) and the api (its own instance's gauges). Why not
 * `prom-client`: docs/adr/0011-prometheus-histograms.md.
 *
 * @module
 */

/** Label names to values. */
export type PromLabels = Record<string, string>;
/** One sample of a family: `<name><suffix>{labels} value`. */
export interface PromSample {
  suffix?: string;
  labels?: PromLabels;
  value: number;
}
/** The metric types this writer emits. */
export type PromType = "counter" | "gauge" | "histogram";

/** Builds one exposition, family by family. */
export class PromText {
  readonly #lines: string[] = [];
  readonly #common: PromLabels;

  /** `common`: labels every sample gets (e.g. the api instance). */
  constructor(common: PromLabels = {}) {
    this.#common = common;
  }

  /** Adds a family: its HELP and TYPE lines, then its samples. */
  family(name: string, type: PromType, help: string, samples: readonly PromSample[]): this {
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const x of samples) this.#lines.push(`${name}${x.suffix ?? ""}${labels({ ...this.#common, ...x.labels })} ${num(x.value)}`);
    return this;
  }

  /**
   * Adds a histogram from cumulative bucket counts (`counts[i]`: observations ≤ `bounds[i]`),
   * with its `+Inf` bucket, `_sum` and `_count`, under `labels`.
   */
  histogram(
    name: string,
    help: string,
    h: { bounds: readonly number[]; counts: readonly number[]; sum: number; count: number },
    extra: PromLabels = {},
  ): this {
    const buckets = h.bounds.map((le, i) => ({ suffix: "_bucket", labels: { ...extra, le: num(le) }, value: h.counts[i] ?? 0 }));
    return this.family(name, "histogram", help, [
      ...buckets,
      { suffix: "_bucket", labels: { ...extra, le: "+Inf" }, value: h.count },
      { suffix: "_sum", labels: extra, value: h.sum },
      { suffix: "_count", labels: extra, value: h.count },
    ]);
  }

  /** The exposition, ending with a newline. */
  toString(): string {
    return `${this.#lines.join("\n")}\n`;
  }
}

function labels(l: PromLabels): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function escapeLabel(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function escapeHelp(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v);
}
