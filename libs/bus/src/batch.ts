/**
 * Events in batches: a publisher that collects items and sends them as one message, a JSON
 * array in the order they were pushed, at most every `intervalMs` (or sooner when `maxItems`
 * are waiting). Subscribers still see every item, in order; a process puts one message on NATS
 * per interval instead of one per event. The contract's data is the array
 * (`z.array(Item)`), validated once by the receiver.
 *
 * @module
 */
import type { EventContract } from "@atlas/contracts";
import type { z } from "zod";
import type { Bus } from "./bus.ts";

/** Options for {@link EventBatcher}. */
export interface EventBatcherOptions {
  /** Longest an item waits before its batch goes out, in ms; default 100. */
  intervalMs?: number;
  /** A batch goes out at once when this many items wait; default 256. */
  maxItems?: number;
}

/** Publishes the items pushed to it in batches on one event subject. */
export class EventBatcher<P, Item> {
  readonly #publish: (items: Item[]) => void;
  readonly #intervalMs: number;
  readonly #maxItems: number;
  #items: Item[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    bus: Bus,
    contract: EventContract<P, z.ZodArray<z.ZodType<Item>>>,
    options: EventBatcherOptions & ([P] extends [void] ? { params?: undefined } : { params: P }),
  ) {
    this.#intervalMs = Math.max(0, options.intervalMs ?? 100);
    this.#maxItems = Math.max(1, options.maxItems ?? 256);
    const params = (options.params === undefined ? [] : [options.params]) as [P] extends [void] ? [] : [P];
    this.#publish = (items) => bus.publish(contract, items as z.input<typeof contract.data>, ...params);
  }

  /** Items waiting for the next batch. */
  get pending(): number {
    return this.#items.length;
  }

  /** Adds an item to the current batch (dropped after `close`). */
  push(item: Item): void {
    if (this.#closed) return;
    this.#items.push(item);
    if (this.#items.length >= this.#maxItems) this.flush();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), this.#intervalMs);
      this.#timer.unref?.();
    }
  }

  /** Sends what waits now. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#items.length === 0) return;
    const items = this.#items;
    this.#items = [];
    this.#publish(items);
  }

  /** Sends what waits and accepts nothing more. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}
