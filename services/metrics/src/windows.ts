/**
 * Sliding windows over counters and latencies, on one ring of time slots.
 *
 * Time is cut into slots of `slotMs` (default 1 s). A window of `W` ms spans the last
 * `W / slotMs` slots, the current (partial) one included, so a value recorded at `t` counts in
 * that window until the slot boundary that falls in `(t + W − slotMs, t + W]`: it never stays
 * longer than `W`, and leaves at most one slot early. Every window keeps running totals: each
 * value is added to them as it is recorded and taken out of them when its slot leaves the
 * window, so reading a window never walks its slots (except for `max`).
 *
 * Latencies go into HdrHistogram (`hdr-histogram-js`, 3 significant digits: a percentile is
 * within 0.1 % of the exact one) kept per window; each slot also keeps its raw values (as
 * integer microseconds) so they can be taken out of the windows' histograms when they expire.
 * Memory is therefore proportional to the values recorded in the longest window.
 *
 * The clock is injected, so tests move time by hand and never sleep.
 *
 * @module
 */
import * as hdr from "hdr-histogram-js";

/** Milliseconds since the epoch, or any monotonic origin. */
export type Clock = () => number;

/** Options for {@link SlidingWindows}. */
export interface SlidingWindowsOptions {
  /** Window lengths in ms; each a multiple of `slotMs`. */
  windowsMs: readonly number[];
  /** Slot length in ms; default 1000. */
  slotMs?: number;
  /** The clock; default `Date.now`. */
  now?: Clock;
  /** When counting started (for the span of a young window); default `now()`. */
  startedAt?: number;
}

/** Percentiles of one latency over a window, in ms. */
export interface Percentiles {
  count: number;
  mean: number;
  max: number;
  p50: number;
  p95: number;
  p99: number;
}

/** An empty {@link Percentiles}. */
export const NO_PERCENTILES: Readonly<Percentiles> = Object.freeze({ count: 0, mean: 0, max: 0, p50: 0, p95: 0, p99: 0 });

const MAX_US = 0xffff_ffff;

/** Raw values of one latency in one slot, as integer microseconds. */
class Values {
  data = new Uint32Array(8);
  length = 0;
  sumMs = 0;

  push(us: number, ms: number): void {
    if (this.length === this.data.length) {
      const next = new Uint32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = us;
    this.sumMs += ms;
  }
}

/** What one time slot holds. */
class Slot {
  index = -1;
  readonly counters = new Map<string, number>();
  readonly maxes = new Map<string, number>();
  readonly values = new Map<string, Values>();

  clear(index: number): void {
    this.index = index;
    this.counters.clear();
    this.maxes.clear();
    // Keep the arrays for reuse; only their length resets.
    for (const v of this.values.values()) {
      v.length = 0;
      v.sumMs = 0;
    }
  }
}

/** One window's running totals. */
class WindowTotals {
  readonly counters = new Map<string, number>();
  readonly histograms = new Map<string, { h: hdr.Histogram; sumMs: number }>();

  constructor(readonly slots: number) {}
}

/** Counters, maxima and latency percentiles over several sliding windows. */
export class SlidingWindows {
  readonly slotMs: number;
  readonly windowsMs: readonly number[];
  readonly startedAt: number;
  readonly #now: Clock;
  readonly #ring: Slot[];
  readonly #windows: WindowTotals[];
  #current: number;

  constructor(options: SlidingWindowsOptions) {
    this.slotMs = options.slotMs ?? 1000;
    this.windowsMs = [...options.windowsMs];
    this.#now = options.now ?? Date.now;
    for (const w of this.windowsMs) {
      if (!(w > 0) || w % this.slotMs !== 0) {
        throw new RangeError(`Cannot make a window of ${w} ms: it must be a positive multiple of the ${this.slotMs} ms slot`);
      }
    }
    const now = this.#now();
    this.startedAt = options.startedAt ?? now;
    this.#windows = this.windowsMs.map((w) => new WindowTotals(w / this.slotMs));
    const ringSize = Math.max(1, ...this.#windows.map((w) => w.slots));
    this.#ring = Array.from({ length: ringSize }, () => new Slot());
    this.#current = Math.floor(now / this.slotMs);
    this.#slot(this.#current).clear(this.#current);
  }

  /** Adds `by` (default 1) to a counter. */
  add(key: string, by = 1): void {
    this.#advance();
    const slot = this.#slot(this.#current);
    slot.counters.set(key, (slot.counters.get(key) ?? 0) + by);
    for (const w of this.#windows) w.counters.set(key, (w.counters.get(key) ?? 0) + by);
  }

  /** Records a sample whose window maximum is wanted (queue depth). */
  sampleMax(key: string, value: number): void {
    this.#advance();
    const slot = this.#slot(this.#current);
    const prev = slot.maxes.get(key);
    if (prev === undefined || value > prev) slot.maxes.set(key, value);
  }

  /** Records one latency in ms (negative values count as 0). */
  observe(key: string, ms: number): void {
    this.#advance();
    const clamped = ms > 0 && Number.isFinite(ms) ? ms : 0;
    const us = Math.min(MAX_US, Math.round(clamped * 1000));
    const slot = this.#slot(this.#current);
    let values = slot.values.get(key);
    if (values === undefined) {
      values = new Values();
      slot.values.set(key, values);
    }
    values.push(us, clamped);
    for (const w of this.#windows) {
      let entry = w.histograms.get(key);
      if (entry === undefined) {
        entry = { h: hdr.build({ numberOfSignificantValueDigits: 3 }), sumMs: 0 };
        w.histograms.set(key, entry);
      }
      entry.h.recordValue(us);
      entry.sumMs += clamped;
    }
  }

  /** A counter's sum over window `w` (an index into `windowsMs`). */
  count(w: number, key: string): number {
    this.#advance();
    return this.#window(w).counters.get(key) ?? 0;
  }

  /** Every counter of window `w` whose key starts with `prefix`, without the prefix. */
  countsWithPrefix(w: number, prefix: string): Record<string, number> {
    this.#advance();
    const out: Record<string, number> = {};
    for (const [k, v] of this.#window(w).counters) if (v > 0 && k.startsWith(prefix)) out[k.slice(prefix.length)] = v;
    return out;
  }

  /** The largest sample of `key` in window `w`, or 0. Walks the window's slots. */
  max(w: number, key: string): number {
    this.#advance();
    const first = this.#current - this.#window(w).slots + 1;
    let max = 0;
    for (const slot of this.#ring) {
      if (slot.index < first || slot.index > this.#current) continue;
      const v = slot.maxes.get(key);
      if (v !== undefined && v > max) max = v;
    }
    return max;
  }

  /** Count, mean, max and p50/p95/p99 of a latency over window `w`, in ms. */
  percentiles(w: number, key: string): Percentiles {
    this.#advance();
    const entry = this.#window(w).histograms.get(key);
    if (entry === undefined || entry.h.totalCount === 0) return { ...NO_PERCENTILES };
    const { h } = entry;
    const at = (p: number) => h.getValueAtPercentile(p) / 1000;
    return {
      count: h.totalCount,
      mean: entry.sumMs / h.totalCount,
      // Not `h.maxValue`: values taken out of the window may leave it stale.
      max: at(100),
      p50: at(50),
      p95: at(95),
      p99: at(99),
    };
  }

  /** How many ms window `w` covers now: its length, or less right after counting started. */
  spanMs(w: number): number {
    this.#advance();
    const now = this.#now();
    const windowStart = (this.#current - this.#window(w).slots + 1) * this.slotMs;
    return Math.max(0, now - Math.max(windowStart, this.startedAt));
  }

  /** True when no window holds anything. */
  isEmpty(): boolean {
    this.#advance();
    for (const w of this.#windows) {
      for (const v of w.counters.values()) if (v !== 0) return false;
      for (const e of w.histograms.values()) if (e.h.totalCount > 0) return false;
    }
    return this.#ring.every((s) => s.maxes.size === 0);
  }

  #window(w: number): WindowTotals {
    const win = this.#windows[w];
    if (win === undefined) throw new RangeError(`Unknown window index ${w}`);
    return win;
  }

  #slot(index: number): Slot {
    const n = this.#ring.length;
    return this.#ring[((index % n) + n) % n] as Slot;
  }

  /** Moves to the clock's slot, taking the slots that leave each window out of its totals. */
  #advance(): void {
    const target = Math.floor(this.#now() / this.slotMs);
    if (target <= this.#current) return;
    if (target - this.#current > this.#ring.length) {
      // Idle for longer than the longest window: everything has left.
      for (const w of this.#windows) {
        w.counters.clear();
        for (const e of w.histograms.values()) {
          e.h.reset();
          e.sumMs = 0;
        }
      }
      for (const s of this.#ring) s.clear(-1);
      this.#current = target;
      this.#slot(target).clear(target);
      return;
    }
    for (let s = this.#current + 1; s <= target; s++) {
      for (const w of this.#windows) this.#expire(w, s - w.slots);
      this.#slot(s).clear(s);
    }
    this.#current = target;
  }

  /** Takes slot `index` out of window `w`'s totals (when the ring still holds it). */
  #expire(w: WindowTotals, index: number): void {
    const slot = this.#slot(index);
    if (slot.index !== index) return;
    for (const [k, v] of slot.counters) {
      const left = (w.counters.get(k) ?? 0) - v;
      if (left === 0) w.counters.delete(k);
      else w.counters.set(k, left);
    }
    for (const [k, values] of slot.values) {
      if (values.length === 0) continue;
      const entry = w.histograms.get(k);
      if (entry === undefined) continue;
      for (let i = 0; i < values.length; i++) entry.h.recordValueWithCount(values.data[i] as number, -1);
      entry.sumMs -= values.sumMs;
      if (entry.h.totalCount <= 0) {
        entry.h.reset();
        entry.sumMs = 0;
      }
    }
  }
}
