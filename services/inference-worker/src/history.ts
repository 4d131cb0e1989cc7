/**
 * Recalled session history that does not fit the context: the api sends the newest layers its
 * estimate allows (an estimate that errs towards too many), marked by `GenerateRequest.history`;
 * the worker, which knows the real token counts, drops the oldest of them until the prompt and
 * the reply's room fit. The request's own messages and its leading instructions are never
 * dropped; what is kept is always the newest layers, whole.
 *
 * When layers are dropped the slot's cached tokens match the new prompt only up to where the
 * dropped history began, so the rest is evaluated again once (llama.cpp could shift the context
 * instead, but shifted keys are not bit-identical to evaluated ones, and greedy answers would
 * then depend on the slot's history; see docs/memory.md).
 *
 * @module
 */
import type { EngineMessage } from "@atlas/contracts";

/** Where the recalled history sits in a request's messages. */
export interface HistoryMarks {
  /** Index of the first recalled message. */
  start: number;
  /** Messages per recalled layer, oldest first. */
  layers: number[];
}

/** What {@link fitHistory} kept. */
export interface FittedHistory<T> {
  messages: EngineMessage[];
  /** The prompt that fits (whatever `measure` returned for `messages`). */
  prompt: T;
  /** Oldest layers dropped. */
  dropped: number;
}

/**
 * Drops the fewest oldest layers so that `fits(measure(messages))`; undefined when even
 * without any recalled layer the prompt does not fit (the caller reports that as usual).
 * `measure` renders and tokenizes: it runs O(log layers) times, only when the whole does not fit.
 */
export function fitHistory<T>(
  messages: readonly EngineMessage[],
  marks: HistoryMarks,
  measure: (messages: EngineMessage[]) => T,
  fits: (prompt: T) => boolean,
): FittedHistory<T> | undefined {
  const layers = marks.layers.filter((n) => n > 0);
  const total = layers.reduce((a, b) => a + b, 0);
  if (marks.start < 0 || marks.start + total > messages.length) return undefined;
  const without = (dropped: number) => {
    let skip = 0;
    for (let i = 0; i < dropped; i++) skip += layers[i] ?? 0;
    return [...messages.slice(0, marks.start), ...messages.slice(marks.start + skip)];
  };
  const all = measure([...messages]);
  if (fits(all)) return { messages: [...messages], prompt: all, dropped: 0 };
  // The smallest number of dropped layers that fits (more dropped never makes it longer).
  let lo = 1;
  let hi = layers.length;
  let best: FittedHistory<T> | undefined;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const kept = without(mid);
    const prompt = measure(kept);
    if (fits(prompt)) {
      best = { messages: kept, prompt, dropped: mid };
      hi = mid - 1;
    } else lo = mid + 1;
  }
  return best;
}
