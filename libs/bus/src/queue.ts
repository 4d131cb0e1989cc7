/**
 * A small async queue: the bridge from NATS callbacks to an async iterator.
 *
 * @module
 */

/** Push values in, pull them out with `for await`; `fail` ends the iteration with an error. */
export class AsyncQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  #done = false;
  #error: unknown;
  #onReturn: (() => void) | undefined;

  constructor(options: { onReturn?: () => void } = {}) {
    this.#onReturn = options.onReturn;
  }

  /** Adds a value; ignored after the queue ended. */
  push(item: T): void {
    if (this.#done) return;
    const w = this.#waiting;
    if (w !== undefined) {
      this.#waiting = undefined;
      w.resolve({ value: item, done: false });
    } else this.#items.push(item);
  }

  /** Ends the queue normally once the buffered items are consumed. */
  close(): void {
    this.#finish(undefined);
  }

  /** Ends the queue with an error, after the buffered items. */
  fail(err: unknown): void {
    this.#finish(err ?? new Error("Stream failed"));
  }

  #finish(err: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = err;
    const w = this.#waiting;
    if (w !== undefined) {
      this.#waiting = undefined;
      if (err === undefined) w.resolve({ value: undefined, done: true });
      else w.reject(err);
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.#items.length > 0) return Promise.resolve({ value: this.#items.shift() as T, done: false });
        if (this.#done) {
          return this.#error === undefined ? Promise.resolve({ value: undefined, done: true }) : Promise.reject(this.#error);
        }
        return new Promise((resolve, reject) => {
          this.#waiting = { resolve, reject };
        });
      },
      return: () => {
        const wasDone = this.#done;
        this.#done = true;
        this.#items = [];
        if (!wasDone) this.#onReturn?.();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
