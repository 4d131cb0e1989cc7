/**
 * What one persistence instance remembers about sessions, all of it rebuilt from the log:
 *
 * - recent sessions' states, least recently used dropped first past a byte budget;
 * - the id of each session's last record (also for sessions not cached: a writer names it as
 *   the `prev` of its record, which lets the other instances check they saw the same history);
 * - which sessions the log has at all, once learned at start: a session not in that set is new,
 *   and its first recall needs no lookup.
 *
 * The rules for keeping it current are in `sessions.ts`.
 *
 * @module
 */
import type { SessionState } from "./records.ts";

/** Most sessions whose last record id is remembered without their document. */
const MAX_LAST_IDS = 100_000;
/** Most session names remembered to answer "no such session" without a lookup. */
const MAX_KNOWN = 1_000_000;

/** The cache of one instance. */
export class SessionCache {
  readonly #entries = new Map<string, SessionState>();
  readonly #lastIds = new Map<string, string>();
  readonly #known = new Set<string>();
  readonly #maxBytes: number;
  #complete = false;
  #bytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Cached sessions and their size in bytes. */
  get size(): { entries: number; bytes: number } {
    return { entries: this.#entries.size, bytes: this.#bytes };
  }

  /** A cached session (now the most recently used). */
  get(k: string): SessionState | undefined {
    const s = this.#entries.get(k);
    if (s !== undefined) {
      this.#entries.delete(k);
      this.#entries.set(k, s);
    }
    return s;
  }

  /** Caches a session (its last record id and existence too), dropping the least recently used past the budget. */
  set(k: string, state: SessionState): void {
    this.delete(k);
    this.#entries.set(k, state);
    this.#bytes += state.size;
    if (state.lastId !== null) {
      this.setLastId(k, state.lastId);
      this.know(k);
    }
    for (const old of [...this.#entries.keys()]) {
      if (this.#bytes <= this.#maxBytes || old === k) break;
      this.delete(old);
    }
  }

  /** Accounts for a cached state that grew in place by `delta` bytes. */
  grew(delta: number): void {
    this.#bytes += delta;
  }

  /** Drops a cached session; true when it was cached. */
  delete(k: string): boolean {
    const s = this.#entries.get(k);
    if (s === undefined) return false;
    this.#entries.delete(k);
    this.#bytes -= s.size;
    return true;
  }

  /** The id of a session's last record as far as this instance knows: null when it has none, undefined when unknown. */
  lastId(k: string): string | null | undefined {
    const cached = this.#entries.get(k);
    if (cached !== undefined) return cached.lastId;
    const last = this.#lastIds.get(k);
    if (last !== undefined) return last;
    return this.knows(k) === false ? null : undefined;
  }

  setLastId(k: string, id: string): void {
    this.#lastIds.delete(k);
    this.#lastIds.set(k, id);
    if (this.#lastIds.size > MAX_LAST_IDS) this.#lastIds.delete(this.#lastIds.keys().next().value as string);
  }

  forgetLastId(k: string): void {
    this.#lastIds.delete(k);
  }

  /** Notes that the log has a session; true when it is new (the set was complete and lacked it). */
  know(k: string): boolean {
    const isNew = this.#complete && !this.#known.has(k);
    if (this.#known.size < MAX_KNOWN) this.#known.add(k);
    else this.#complete = false;
    return isNew;
  }

  /** Whether the log has a session: true, false, or undefined when this instance cannot tell. */
  knows(k: string): boolean | undefined {
    if (this.#known.has(k)) return true;
    return this.#complete ? false : undefined;
  }

  /** Learns every session the log has (listed after this instance began to hear new records). */
  learn(keys: Iterable<string>, count: number): void {
    if (count > MAX_KNOWN) return;
    for (const k of keys) this.#known.add(k);
    this.#complete = true;
  }

  /** Forgets everything (records may have been missed). */
  clear(): void {
    this.#entries.clear();
    this.#lastIds.clear();
    this.#known.clear();
    this.#complete = false;
    this.#bytes = 0;
  }
}
