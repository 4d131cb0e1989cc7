/**
 * An indexed binary min-heap over entries ranked by `(priority, seq)`: O(log n) insert,
 * update and delete of any entry, O(1) minimum. Internal to the policies.
 *
 * @module
 */

/** An entry the heap can hold; `pos` is the heap's bookkeeping (−1 when not in a heap). */
export interface HeapEntry {
  readonly key: string;
  /** Lower is evicted first. */
  priority: number;
  /** Tie-break: lower (older) is evicted first. Unique per policy. */
  seq: number;
  pos: number;
}

/** Whether `a` ranks before `b` (is the better victim). */
export function ranksBefore(a: HeapEntry, b: HeapEntry): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.seq < b.seq);
}

/** An indexed min-heap of {@link HeapEntry}. */
export class MinHeap<E extends HeapEntry> {
  readonly #items: E[] = [];

  /** How many entries the heap holds. */
  get length(): number {
    return this.#items.length;
  }

  /** The lowest-ranked entry, if any. */
  peek(): E | undefined {
    return this.#items[0];
  }

  /** The entry at heap position `i` (for ordered walks from the top). */
  at(i: number): E | undefined {
    return this.#items[i];
  }

  /** Adds an entry that is not in the heap. */
  push(entry: E): void {
    entry.pos = this.#items.length;
    this.#items.push(entry);
    this.#up(entry.pos);
  }

  /** Restores the order after `entry`'s priority or seq changed. */
  update(entry: E): void {
    this.#up(entry.pos);
    this.#down(entry.pos);
  }

  /** Removes an entry that is in the heap. */
  delete(entry: E): void {
    const i = entry.pos;
    const last = this.#items.pop()!;
    entry.pos = -1;
    if (last === entry) return;
    this.#items[i] = last;
    last.pos = i;
    this.update(last);
  }

  /** Re-establishes the heap order after many priorities changed at once: O(n). */
  rebuild(): void {
    for (let i = (this.#items.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #up(i: number): void {
    const items = this.#items;
    const entry = items[i]!;
    while (i > 0) {
      const parentIndex = (i - 1) >> 1;
      const parent = items[parentIndex]!;
      if (!ranksBefore(entry, parent)) break;
      items[i] = parent;
      parent.pos = i;
      i = parentIndex;
    }
    items[i] = entry;
    entry.pos = i;
  }

  #down(i: number): void {
    const items = this.#items;
    const n = items.length;
    const entry = items[i]!;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      let child = left;
      if (right < n && ranksBefore(items[right]!, items[left]!)) child = right;
      const c = items[child]!;
      if (!ranksBefore(c, entry)) break;
      items[i] = c;
      c.pos = i;
      i = child;
    }
    items[i] = entry;
    entry.pos = i;
  }
}
