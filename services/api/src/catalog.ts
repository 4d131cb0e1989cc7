/**
 * The models the cluster serves, as seen in the workers' discovery metadata. Refreshed in the
 * background so a request never waits on discovery, and on demand when a request names a model
 * the catalog does not know yet. A known worker that does not answer a discovery round (a busy
 * machine, a reconnect) is asked again at once with a window `CONFIRM_FACTOR` times longer, and
 * is forgotten only once no round has seen it for `FORGET_MS`: on a starved machine a whole round
 * can miss a live worker, and the model list must not blink (each blink was a 503 `no_workers`).
 * The catalog only says which models exist; which worker serves a request is the scheduler's
 * call, from heartbeats, so a worker that died meanwhile is never routed to.
 *
 * A model whose workers are all gone is remembered for `rememberMs` (bounded to `MAX_REMEMBERED`
 * models): the api then answers it with a 503 and `Retry-After` (its workers restart, or drain
 * for a rolling update) rather than a 404, which says the model does not exist.
 *
 * @module
 */
import { type Bus, raceAbort } from "@atlas/bus";
import { type ServedModel, ServiceName, WorkerMetadata } from "@atlas/contracts";

/** One model as `/v1/models` lists it, plus what the api needs to route to it (contract `ServedModel`). */
export type ModelEntry = ServedModel;

/** How much longer the confirming round is when a known worker did not answer. */
export const CONFIRM_FACTOR = 4;

/**
 * How long a worker that no discovery round has seen stays in the catalog: with the 2 s background
 * refresh, two rounds in a row (each with its confirming round) must miss it.
 */
export const FORGET_MS = 3000;

/** How long a model is remembered after its last worker was seen, by default: 10 minutes. */
export const REMEMBER_MS = 10 * 60_000;

/** Most models remembered without a live worker (the ones seen longest ago are forgotten first). */
export const MAX_REMEMBERED = 256;

/** What discovery said of one worker (its metadata without the id, which keys it), and when. */
type SeenWorker = Omit<WorkerMetadata, "worker_id"> & { seenAt: number };

/** Options for {@link ModelCatalog}. */
export interface ModelCatalogOptions {
  /** Background refresh period; default 2000 ms. */
  refreshMs?: number;
  /** Discovery window; default 150 ms. */
  discoveryMs?: number;
  /** How long a model without live workers is remembered ({@link ModelCatalog.remembers}); default {@link REMEMBER_MS}. */
  rememberMs?: number;
  /** How long a worker no round has seen stays listed; default {@link FORGET_MS}. */
  forgetMs?: number;
  /** The clock (ms); default `Date.now`. */
  now?: () => number;
}

/** Live view of the served models. */
export class ModelCatalog {
  readonly #bus: Bus;
  readonly #discoveryMs: number;
  readonly #rememberMs: number;
  readonly #forgetMs: number;
  readonly #now: () => number;
  #models = new Map<string, ModelEntry>();
  /** Every model seen, by id: when it last had a live worker (oldest first). */
  readonly #seen = new Map<string, number>();
  readonly #workers = new Map<string, SeenWorker>();
  #timer: NodeJS.Timeout | undefined;
  #pending: Promise<void> | undefined;
  #lastRefresh = 0;
  #lastSlowRefresh = 0;

  constructor(bus: Bus, options: ModelCatalogOptions = {}) {
    this.#bus = bus;
    this.#discoveryMs = options.discoveryMs ?? 150;
    this.#rememberMs = options.rememberMs ?? REMEMBER_MS;
    this.#forgetMs = options.forgetMs ?? FORGET_MS;
    this.#now = options.now ?? Date.now;
    // Background rounds: a failed one (the connection closing under it) leaves the view as it was.
    const background = () => void this.refresh().catch(() => {});
    this.#timer = setInterval(background, options.refreshMs ?? 2000);
    this.#timer.unref();
    background();
  }

  /** ms since the view was last rebuilt from discovery. */
  get ageMs(): number {
    return this.#now() - this.#lastRefresh;
  }

  /** Every served model, sorted by id. */
  list(): ModelEntry[] {
    return [...this.#models.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  /**
   * The model with this id, refreshing once first if it is unknown (and the view is older than
   * 500 ms). The refreshes are shared by every caller: `signal` ends this caller's wait for them
   * (`cancelled`), not the refresh.
   */
  async get(id: string, signal?: AbortSignal): Promise<ModelEntry | undefined> {
    const hit = this.#models.get(id);
    if (hit !== undefined) return hit;
    const wait = <T>(p: Promise<T>) => raceAbort(p, signal);
    if (this.#now() - this.#lastRefresh > 500) await wait(this.refresh());
    // Still unknown: on a busy machine answers may take longer than the usual window; ask once
    // more with a longer one before a request is told that no worker serves its model.
    // At most every 2 s, so requests naming unknown models cannot make the api flood discovery.
    if (!this.#models.has(id) && this.#now() - this.#lastSlowRefresh > 2000) {
      this.#lastSlowRefresh = this.#now();
      await wait(this.#pending ?? Promise.resolve());
      this.#pending ??= this.#refresh(this.#discoveryMs * 4).finally(() => {
        this.#pending = undefined;
      });
      await wait(this.#pending);
    }
    return this.#models.get(id);
  }

  /**
   * Whether `id` had a live worker within the last `rememberMs` (it may have none now: its workers
   * died or drain). A model served now is remembered too.
   */
  remembers(id: string): boolean {
    if (this.#models.has(id)) return true;
    const at = this.#seen.get(id);
    return at !== undefined && this.#now() - at <= this.#rememberMs;
  }

  /** Rebuilds the view from discovery (one refresh at a time). */
  refresh(): Promise<void> {
    this.#pending ??= this.#refresh().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #refresh(windowMs?: number): Promise<void> {
    if (!this.#bus.connected) return;
    const window = windowMs ?? this.#discoveryMs;
    let answered = await this.#bus.discover({ service: ServiceName.worker, timeoutMs: window });
    const ids = new Set(answered.map((w) => w.metadata?.worker_id));
    if ([...this.#workers.keys()].some((id) => !ids.has(id))) {
      // Someone known did not answer: ask once more, longer, before forgetting anyone.
      answered = [...answered, ...(await this.#bus.discover({ service: ServiceName.worker, timeoutMs: window * CONFIRM_FACTOR }))];
    }
    const now = this.#now();
    for (const w of answered) {
      const parsed = WorkerMetadata.safeParse(w.metadata ?? {});
      if (!parsed.success) continue; // no model loaded (or not a worker of this version): out of rotation
      const { worker_id: id, ...seen } = parsed.data;
      this.#workers.set(id, { ...seen, seenAt: now });
    }
    for (const [id, w] of this.#workers) if (now - w.seenAt > this.#forgetMs) this.#workers.delete(id);
    const models = new Map<string, ModelEntry>();
    for (const [id, w] of this.#workers) {
      const entry = models.get(w.model) ?? {
        id: w.model,
        created: w.created,
        fingerprint: w.fingerprint,
        ctx_size: w.ctx_size,
        workers: [],
        slots: 0,
      };
      entry.workers.push(id);
      entry.slots += w.slots;
      models.set(w.model, entry);
    }
    this.#models = models;
    this.#lastRefresh = now;
    for (const id of models.keys()) {
      this.#seen.delete(id); // re-inserted last: the map stays ordered from seen longest ago
      this.#seen.set(id, this.#lastRefresh);
    }
    for (const [id, at] of this.#seen) {
      if (this.#seen.size <= MAX_REMEMBERED && this.#lastRefresh - at <= this.#rememberMs) break;
      this.#seen.delete(id);
    }
  }

  /** Stops the background refresh. */
  close(): void {
    clearInterval(this.#timer);
  }
}
