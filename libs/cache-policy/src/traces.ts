/**
 * Deterministic request traces for comparing eviction policies: Zipf popularity, Zipf with
 * one-off scans mixed in, shifting popularity, and Zipf with a cyclic loop mixed in. Every
 * generator takes a seed; the same options always give the same trace.
 *
 * A request names a session and the size of its KV state: tokens × bytes per token, the token
 * count drawn once per session, uniformly in `[minTokens, maxTokens]`.
 *
 * @module
 */

const MiB = 1024 * 1024;

/** KV bytes per token of the models ATLAS runs (f16 KV cache, as llama.cpp stores it). */
export const BytesPerToken = {
  /** The generated demo model. */
  tiny: 528,
  /** The ~134M-parameter benchmark model: 36.9 KB per token. */
  m134: 36_900,
} as const;

/** ATLAS's default tier budgets (the defaults of `ATLAS_L2_BUDGET_MB` and `ATLAS_L3_BUDGET_MB`, docs/configuration.md; L1 as the seed sized it). */
export const DefaultBudgets = {
  /** L1: resident slots, per worker. */
  l1: 64 * MiB,
  /** L2: snapshot files, per worker. */
  l2: 256 * MiB,
  /** L3: JetStream object store, cluster-wide. */
  l3: 1024 * MiB,
} as const;

/** One request of a trace: a session and its KV state's size. */
export interface TraceRequest {
  readonly key: string;
  readonly sizeBytes: number;
  /** Tokens in the session's state: what a miss recomputes. */
  readonly tokens: number;
}

/** A named, reproducible sequence of requests. */
export interface Trace {
  readonly name: string;
  /** One line saying what the trace is, with its parameters. */
  readonly description: string;
  readonly requests: readonly TraceRequest[];
}

/** Options every generator shares. */
export interface WorkloadOptions {
  /** PRNG seed. Default 1. */
  readonly seed?: number;
  /** Distinct sessions in the popularity distribution. Default 2,000. */
  readonly sessions?: number;
  /** Requests in the trace. Default 60,000. */
  readonly requests?: number;
  /** Zipf exponent s: the k-th most popular session gets weight 1/k^s. Default 1.0. */
  readonly zipfS?: number;
  /** Fewest tokens in a session. Default 200. */
  readonly minTokens?: number;
  /** Most tokens in a session. Default 2,000. */
  readonly maxTokens?: number;
  /** KV bytes per token. Default {@link BytesPerToken.tiny}. */
  readonly bytesPerToken?: number;
}

/**
 * The default workload: the demo model's 528 B/token, 2,000 sessions of 200–2,000 tokens
 * (1,092 MiB of KV state in all: L1 holds 6% of it, L2 23%, L3 94%), 60,000 requests (30 per
 * session on average), Zipf s = 1.0. See `docs/cache-policies.md` for why.
 */
export const DefaultWorkload = {
  seed: 1,
  sessions: 2_000,
  requests: 60_000,
  zipfS: 1.0,
  minTokens: 200,
  maxTokens: 2_000,
  bytesPerToken: BytesPerToken.tiny,
} as const satisfies Required<WorkloadOptions>;

/** A seeded PRNG (mulberry32): returns floats in [0, 1). */
export function createRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A sampler of ranks 0..n−1 with P(k) ∝ 1/(k+1)^s (inverse CDF by binary search). */
export function createZipf(n: number, s: number, random: () => number): () => number {
  if (!(Number.isInteger(n) && n > 0)) throw new RangeError(`Cannot sample a Zipf law over ${n} items: it needs a positive integer`);
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    total += 1 / (k + 1) ** s;
    cdf[k] = total;
  }
  return () => {
    const u = random() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

function shuffled(n: number, random: () => number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

interface Workload extends Required<WorkloadOptions> {
  readonly random: () => number;
  /** Draws a session's size once: tokens uniform in [minTokens, maxTokens]. */
  session(key: string): TraceRequest;
}

function workload(options: WorkloadOptions): Workload {
  const w = { ...DefaultWorkload, ...options };
  if (!(w.minTokens > 0 && w.maxTokens >= w.minTokens)) {
    throw new RangeError(`Cannot draw sessions of ${w.minTokens}–${w.maxTokens} tokens: need 0 < min ≤ max`);
  }
  const random = createRandom(w.seed);
  const sizes = new Map<string, TraceRequest>();
  return {
    ...w,
    random,
    session(key) {
      let request = sizes.get(key);
      if (request === undefined) {
        const tokens = w.minTokens + Math.floor(random() * (w.maxTokens - w.minTokens + 1));
        request = { key, tokens, sizeBytes: tokens * w.bytesPerToken };
        sizes.set(key, request);
      }
      return request;
    },
  };
}

function describe(w: Workload, extra: string): string {
  return (
    `${w.requests} requests over ${w.sessions} sessions, Zipf s=${w.zipfS}, ${w.minTokens}–${w.maxTokens} tokens × ` +
    `${w.bytesPerToken} B/token, seed ${w.seed}${extra}`
  );
}

/** Zipf popularity: each request picks a session with P ∝ 1/rank^s (ranks shuffled over ids). */
export function zipfTrace(options: WorkloadOptions = {}): Trace {
  const w = workload(options);
  const zipf = createZipf(w.sessions, w.zipfS, w.random);
  const order = shuffled(w.sessions, w.random);
  const requests: TraceRequest[] = [];
  for (let i = 0; i < w.requests; i++) requests.push(w.session(`s${order[zipf()]}`));
  return { name: "zipf", description: describe(w, ""), requests };
}

/** Options of {@link scanTrace}. */
export interface ScanOptions extends WorkloadOptions {
  /** Zipf requests between two scans. Default 400. */
  readonly scanEvery?: number;
  /** One-off sessions per scan, each used once and never again. Default 100. */
  readonly scanLength?: number;
}

/**
 * Zipf popularity with scans mixed in: every `scanEvery` requests, a burst of `scanLength`
 * one-off sessions (a batch job, a crawler): each is used once, and pushes popular sessions
 * out of an LRU cache. `requests` counts the Zipf requests and the scans.
 */
export function scanTrace(options: ScanOptions = {}): Trace {
  const w = workload(options);
  const scanEvery = options.scanEvery ?? 400;
  const scanLength = options.scanLength ?? 100;
  const zipf = createZipf(w.sessions, w.zipfS, w.random);
  const order = shuffled(w.sessions, w.random);
  const requests: TraceRequest[] = [];
  let oneOff = 0;
  while (requests.length < w.requests) {
    for (let i = 0; i < scanEvery && requests.length < w.requests; i++) requests.push(w.session(`s${order[zipf()]}`));
    for (let i = 0; i < scanLength && requests.length < w.requests; i++) requests.push(w.session(`scan${oneOff++}`));
  }
  return {
    name: "scan",
    description: describe(w, `; a scan of ${scanLength} one-off sessions after every ${scanEvery} requests`),
    requests,
  };
}

/** Options of {@link shiftingTrace}. */
export interface ShiftingOptions extends WorkloadOptions {
  /** Requests per phase; each phase draws a new popularity order. Default 5,000. */
  readonly phaseLength?: number;
  /** Fraction of the population re-ranked at each phase change, 0–1. Default 1 (a new hot set). */
  readonly shift?: number;
}

/**
 * Shifting popularity: Zipf, but every `phaseLength` requests a fraction `shift` of the
 * sessions swap popularity ranks with random others, so the hot set changes: yesterday's hot
 * sessions must leave a frequency-based cache.
 */
export function shiftingTrace(options: ShiftingOptions = {}): Trace {
  const w = workload(options);
  const phaseLength = options.phaseLength ?? 5_000;
  const shift = options.shift ?? 1;
  const zipf = createZipf(w.sessions, w.zipfS, w.random);
  const order = shuffled(w.sessions, w.random);
  const requests: TraceRequest[] = [];
  for (let i = 0; i < w.requests; i++) {
    if (i > 0 && i % phaseLength === 0) {
      const moves = Math.round(shift * w.sessions);
      for (let m = 0; m < moves; m++) {
        const a = Math.floor(w.random() * w.sessions);
        const b = Math.floor(w.random() * w.sessions);
        [order[a], order[b]] = [order[b]!, order[a]!];
      }
    }
    requests.push(w.session(`s${order[zipf()]}`));
  }
  return {
    name: "shifting",
    description: describe(w, `; ${Math.round(shift * 100)}% of ranks swapped every ${phaseLength} requests`),
    requests,
  };
}

/** Options of {@link loopTrace}. */
export interface LoopOptions extends WorkloadOptions {
  /** Sessions visited in a fixed cycle. Default 200. */
  readonly loopSessions?: number;
  /** Fraction of requests that go to the loop, 0–1. Default 0.3. */
  readonly loopFraction?: number;
}

/**
 * Zipf popularity with a loop mixed in: a fraction of requests visits `loopSessions` sessions
 * in a fixed cycle (an agent or evaluation harness revisiting its conversations in turn), the
 * access pattern where LRU is worst when the cycle does not fit.
 */
export function loopTrace(options: LoopOptions = {}): Trace {
  const w = workload(options);
  const loopSessions = options.loopSessions ?? 200;
  const loopFraction = options.loopFraction ?? 0.3;
  const zipf = createZipf(w.sessions, w.zipfS, w.random);
  const order = shuffled(w.sessions, w.random);
  const requests: TraceRequest[] = [];
  let next = 0;
  for (let i = 0; i < w.requests; i++) {
    if (w.random() < loopFraction) requests.push(w.session(`loop${next++ % loopSessions}`));
    else requests.push(w.session(`s${order[zipf()]}`));
  }
  return {
    name: "loop",
    description: describe(w, `; ${Math.round(loopFraction * 100)}% of requests cycle through ${loopSessions} sessions`),
    requests,
  };
}

/**
 * The ~134M benchmark model's workload: 200 sessions of 200–2,000 tokens at 36.9 KB/token
 * (7.5 GiB of KV state: L2 holds 3% of it, L3 13%), 20,000 requests, Zipf s = 1.0.
 */
export const BenchmarkModelWorkload = {
  ...DefaultWorkload,
  sessions: 200,
  requests: 20_000,
  bytesPerToken: BytesPerToken.m134,
} as const satisfies Required<WorkloadOptions>;

/** The four benchmark traces on one workload (each with its default shape). */
export function standardTraces(options: WorkloadOptions = {}): Trace[] {
  return [zipfTrace(options), scanTrace(options), shiftingTrace(options), loopTrace(options)];
}
