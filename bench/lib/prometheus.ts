/**
 * Reads the api's Prometheus text (`GET /metrics`, rendered from the metrics service's
 * lifetime totals), for counters the benchmark diffs around a run.
 *
 * @module
 */

/** One sample: metric name, labels, value. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format's sample lines (comments and blank lines skipped). */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** The api's request counters. */
export interface RequestCounters {
  /** `atlas_requests_total{status="ok"}`, all endpoints. */
  ok: number;
  /** `atlas_requests_total`, every status. */
  all: number;
  /** `atlas_requests_over_budget_total`. */
  overBudget: number;
  /** `atlas_latency_budget_seconds` × 1000. */
  budgetMs: number;
}

/** Scrapes `GET /metrics` once. */
export async function requestCounters(baseUrl: string): Promise<RequestCounters> {
  const res = await fetch(`${baseUrl}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics: HTTP ${res.status} ${await res.text()}`);
  const samples = parsePrometheus(await res.text());
  const sum = (name: string, f: (s: PromSample) => boolean = () => true) =>
    samples.filter((s) => s.name === name && f(s)).reduce((a, s) => a + s.value, 0);
  return {
    ok: sum("atlas_requests_total", (s) => s.labels.status === "ok"),
    all: sum("atlas_requests_total"),
    overBudget: sum("atlas_requests_over_budget_total"),
    budgetMs: sum("atlas_latency_budget_seconds") * 1000,
  };
}

/**
 * Scrapes until the `ok` count reaches `atLeast` (the metrics service aggregates the api's
 * events asynchronously) or `timeoutMs` passes; resolves with the last scrape.
 */
export async function countersAfter(baseUrl: string, atLeast: number, timeoutMs = 15_000): Promise<RequestCounters> {
  const deadline = Date.now() + timeoutMs;
  let last = await requestCounters(baseUrl);
  while (last.ok < atLeast && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    last = await requestCounters(baseUrl);
  }
  return last;
}
