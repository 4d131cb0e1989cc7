/**
 * Conversation traces: what a chat server sees. Conversations arrive, take a few turns with
 * other conversations' turns between them (the gaps), grow by every turn, and end; a few come
 * back much later for a few more turns. Unlike the popularity traces (`traces.ts`) most sessions
 * here are never seen again once they end, which is what a recency or frequency index cannot know
 * and Belady's optimum (`belady.ts`) can.
 *
 * @module
 */
import { createRandom, DefaultWorkload, type Trace, type TraceRequest, type WorkloadOptions } from "./traces.ts";

/** Options of {@link conversationTrace}. */
export interface ConversationOptions extends Pick<WorkloadOptions, "seed" | "requests" | "bytesPerToken" | "minTokens"> {
  /** Conversations open at once; each request is a turn of one of them, chosen at random. Default 300. */
  readonly concurrent?: number;
  /** Mean turns of a visit (geometric). Default 6. */
  readonly meanTurns?: number;
  /** Tokens a turn adds to the session (the new message and the reply). Default 150. */
  readonly tokensPerTurn?: number;
  /** Share of ended conversations that come back. Default 0.1. */
  readonly returnShare?: number;
  /** A return comes this many requests later, uniformly in [min, max]. Default 5,000–30,000. */
  readonly returnAfter?: readonly [number, number];
}

interface Conversation {
  key: string;
  tokens: number;
  turnsLeft: number;
}

/** A reproducible conversation trace (see the module doc). */
export function conversationTrace(options: ConversationOptions = {}): Trace {
  const seed = options.seed ?? DefaultWorkload.seed;
  const requests = options.requests ?? DefaultWorkload.requests;
  const bytesPerToken = options.bytesPerToken ?? DefaultWorkload.bytesPerToken;
  const minTokens = options.minTokens ?? DefaultWorkload.minTokens;
  const concurrent = options.concurrent ?? 300;
  const meanTurns = options.meanTurns ?? 6;
  const tokensPerTurn = options.tokensPerTurn ?? 150;
  const returnShare = options.returnShare ?? 0.1;
  const [returnMin, returnMax] = options.returnAfter ?? [5_000, 30_000];
  const random = createRandom(seed);
  const turns = (mean: number) => 1 + Math.floor(Math.log(1 - random()) / Math.log(1 - 1 / mean));
  let created = 0;
  const fresh = (): Conversation => ({
    key: `c${created++}`,
    tokens: minTokens + Math.floor(random() * 2 * tokensPerTurn),
    turnsLeft: turns(meanTurns),
  });
  const active: Conversation[] = Array.from({ length: concurrent }, fresh);
  /** Conversations that will come back, by the request index they return at. */
  const returning = new Map<number, Conversation[]>();
  const out: TraceRequest[] = [];
  for (let i = 0; i < requests; i++) {
    for (const back of returning.get(i) ?? []) active.push(back);
    returning.delete(i);
    const at = Math.floor(random() * active.length);
    const c = active[at] as Conversation;
    out.push({ key: c.key, tokens: c.tokens, sizeBytes: c.tokens * bytesPerToken });
    c.tokens += tokensPerTurn;
    c.turnsLeft -= 1;
    if (c.turnsLeft > 0) continue;
    // It ends: another one takes its place; now and then it comes back much later.
    active[at] = fresh();
    if (random() < returnShare) {
      const when = i + returnMin + Math.floor(random() * (returnMax - returnMin + 1));
      const list = returning.get(when) ?? [];
      list.push({ ...c, turnsLeft: turns(meanTurns / 2) });
      returning.set(when, list);
    }
  }
  return {
    name: "conversations",
    description:
      `${requests} requests, ${concurrent} conversations open at once, ${meanTurns} turns each on average (+${tokensPerTurn} tokens a turn, ` +
      `from ${minTokens}), ${Math.round(returnShare * 100)}% back ${returnMin}–${returnMax} requests later, ${bytesPerToken} B/token, seed ${seed}`,
    requests: out,
  };
}
