/**
 * Belady's offline optimum for a byte-budgeted tier, the bound the online policies are measured
 * against: it knows the whole trace. On a miss it admits the session, then evicts what is needed
 * next the furthest in the future until the tier fits — the incoming session included, which is
 * then not admitted (bypassed). A session never requested again is never admitted. With sizes
 * this is the furthest-next-use heuristic, not a proven optimum (sized caching is NP-hard), and
 * the usual reference.
 *
 * @module
 */
import { type SimulationResult, simulationResult } from "./cache.ts";
import type { TraceRequest } from "./traces.ts";

/** A max-heap of (next use, key), with stale entries skipped on pop. */
class FurthestFirst {
  readonly #next: number[] = [];
  readonly #keys: string[] = [];

  push(next: number, key: string): void {
    this.#next.push(next);
    this.#keys.push(key);
    let i = this.#next.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((this.#next[parent] as number) >= next) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): { next: number; key: string } | undefined {
    if (this.#next.length === 0) return undefined;
    const top = { next: this.#next[0] as number, key: this.#keys[0] as string };
    const lastNext = this.#next.pop() as number;
    const lastKey = this.#keys.pop() as string;
    if (this.#next.length > 0) {
      this.#next[0] = lastNext;
      this.#keys[0] = lastKey;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let largest = i;
        if (l < this.#next.length && (this.#next[l] as number) > (this.#next[largest] as number)) largest = l;
        if (r < this.#next.length && (this.#next[r] as number) > (this.#next[largest] as number)) largest = r;
        if (largest === i) break;
        this.#swap(i, largest);
        i = largest;
      }
    }
    return top;
  }

  #swap(a: number, b: number): void {
    [this.#next[a], this.#next[b]] = [this.#next[b] as number, this.#next[a] as number];
    [this.#keys[a], this.#keys[b]] = [this.#keys[b] as string, this.#keys[a] as string];
  }
}

/** Replays `trace` with Belady's furthest-next-use rule in a tier of `budgetBytes`. */
export function simulateBelady(trace: readonly TraceRequest[], budgetBytes: number): SimulationResult {
  if (!(budgetBytes > 0)) throw new RangeError(`Cannot simulate a budget of ${budgetBytes} bytes: it must be > 0`);
  // The index of each request's key's next request (Infinity: never again).
  const nextUse = new Array<number>(trace.length);
  const seen = new Map<string, number>();
  for (let i = trace.length - 1; i >= 0; i--) {
    const key = (trace[i] as TraceRequest).key;
    nextUse[i] = seen.get(key) ?? Number.POSITIVE_INFINITY;
    seen.set(key, i);
  }
  const resident = new Map<string, { size: number; next: number }>();
  const heap = new FurthestFirst();
  let bytes = 0;
  let hits = 0;
  let tokens = 0;
  let hitTokens = 0;
  let evictions = 0;
  let bytesEvicted = 0;
  let bypassed = 0;
  trace.forEach(({ key, sizeBytes, tokens: t }, i) => {
    tokens += t;
    const next = nextUse[i] as number;
    const entry = resident.get(key);
    if (entry !== undefined) {
      hits++;
      hitTokens += t;
      bytes += sizeBytes - entry.size;
      entry.size = sizeBytes;
      entry.next = next;
    } else if (next === Number.POSITIVE_INFINITY || sizeBytes > budgetBytes) {
      bypassed++;
      return;
    } else {
      resident.set(key, { size: sizeBytes, next });
      bytes += sizeBytes;
    }
    heap.push(next, key);
    while (bytes > budgetBytes) {
      const top = heap.pop();
      if (top === undefined) break;
      const victim = resident.get(top.key);
      if (victim === undefined || victim.next !== top.next) continue; // a stale heap entry
      resident.delete(top.key);
      bytes -= victim.size;
      if (top.key === key && entry === undefined) {
        bypassed++; // the incoming session is the one needed last: it is not admitted
      } else {
        evictions++;
        bytesEvicted += victim.size;
      }
    }
  });
  return simulationResult({ requests: trace.length, hits, tokens, hitTokens, evictions, bytesEvicted, bypassed });
}
