/**
 * Where the pool puts a request (`pool.ts`, `acquire`): the slot that holds its session, the
 * least loaded worker, an empty free slot there, else an idle slot whose session the request's
 * strategy evicts (least recently used by default). Pure functions over the pool's state.
 *
 * @module
 */
import type { CacheStrategy } from "@atlas/contracts";
import type { SlotState, VictimChooser, WorkerState } from "./pool_types.ts";

/** The slot that holds `session`'s state (L1), if any. */
export function residentSlot(session: string, workers: readonly WorkerState[]): SlotState | undefined {
  for (const w of workers) for (const s of w.slots) if (s.session === session) return s;
  return undefined;
}

/** An empty free slot, else an idle one whose session `chooseVictim` evicts for `strategy`. */
export function pickFree(
  slots: readonly SlotState[],
  taken: ReadonlySet<SlotState>,
  strategy: CacheStrategy,
  chooseVictim: VictimChooser,
): SlotState | undefined {
  const candidates = slots.filter((s) => !taken.has(s));
  const empty = candidates.find((s) => s.session === null);
  if (empty !== undefined) return empty;
  const bySession = new Map(candidates.filter((s) => s.session !== null).map((s) => [s.session as string, s]));
  const victim = chooseVictim([...bySession.keys()], strategy);
  return victim === undefined ? candidates[0] : bySession.get(victim);
}

/** The candidate used longest ago (`lastUse`: a use counter per session; unknown ones first). */
export function leastRecentlyUsed(candidates: readonly string[], lastUse: ReadonlyMap<string, number>): string | undefined {
  let best: string | undefined;
  let bestUse = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const use = lastUse.get(c) ?? 0;
    if (use < bestUse) {
      best = c;
      bestUse = use;
    }
  }
  return best;
}

/** Share of a worker's slots leased or busy under a lease the pool does not know. */
export function load(w: WorkerState): number {
  let busy = 0;
  for (const s of w.slots) if (s.lease !== null || s.foreignBusy) busy += 1;
  return busy / Math.max(1, w.slots.length);
}

/**
 * The least loaded worker that has a free slot `usable` accepts (ties: the lower id), in one pass:
 * a grant looks at every worker of its model, so this is O(workers × slots), with no sort.
 */
export function leastLoaded(workers: readonly WorkerState[], usable: (s: SlotState) => boolean): WorkerState | undefined {
  let best: WorkerState | undefined;
  let bestLoad = Number.POSITIVE_INFINITY;
  for (const w of workers) {
    if (!w.slots.some(usable)) continue;
    const l = load(w);
    if (l < bestLoad || (l === bestLoad && best !== undefined && w.id.localeCompare(best.id) < 0)) {
      best = w;
      bestLoad = l;
    }
  }
  return best;
}
