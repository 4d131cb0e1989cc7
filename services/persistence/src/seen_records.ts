/**
 * The log records this persistence instance has seen lately (on its subscription to the memory
 * log), and waits for ones it has not: a recall that names its caller's appends still in flight
 * (`MemoryRecall.after_layers`) is answered once their records are here, so the caller need not
 * wait for the acknowledgements first (read your writes in one exchange, docs/memory.md).
 *
 * @module
 */

/**
 * How many record ids are remembered (oldest forgotten first): far more than the appends of the
 * cluster between a record reaching persistence and its acknowledgement reaching the api (an id
 * forgotten too early only costs that recall the wait's timeout). About 1 MiB.
 */
const REMEMBERED = 16_384;

/** Record ids seen lately, and who waits for which. */
export class SeenRecords {
  readonly #seen = new Set<string>();
  readonly #waiters = new Map<string, Set<() => void>>();

  /** A record reached this instance (after it was applied to the cache). */
  note(id: string): void {
    this.#seen.add(id);
    if (this.#seen.size > REMEMBERED) {
      const oldest = this.#seen.values().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
    const waiting = this.#waiters.get(id);
    if (waiting === undefined) return;
    this.#waiters.delete(id);
    for (const wake of waiting) wake();
  }

  /** Resolves true once every one of `ids` has been seen, false after `timeoutMs` without them all. */
  async wait(ids: readonly string[], timeoutMs: number): Promise<boolean> {
    const missing = ids.filter((id) => !this.#seen.has(id));
    if (missing.length === 0) return true;
    return new Promise((resolve) => {
      let left = missing.length;
      const wakes = new Map<string, () => void>();
      const done = (ok: boolean) => {
        clearTimeout(timer);
        for (const [id, wake] of wakes) this.#waiters.get(id)?.delete(wake);
        for (const id of wakes.keys()) if (this.#waiters.get(id)?.size === 0) this.#waiters.delete(id);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      timer.unref?.();
      for (const id of missing) {
        const wake = () => {
          wakes.delete(id);
          left -= 1;
          if (left === 0) done(true);
        };
        wakes.set(id, wake);
        const set = this.#waiters.get(id) ?? new Set<() => void>();
        set.add(wake);
        this.#waiters.set(id, set);
      }
    });
  }
}
