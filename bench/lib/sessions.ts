/**
 * The sessions client (`bench/child/sessions.ts`), parent side.
 *
 * @module
 */
import { runChild } from "./load.ts";

/** One sessions run. */
export interface SessionsSpec {
  baseUrl: string;
  model: string;
  /** `session`: atlas.session_id + only the new message; `history`: the client resends the conversation. */
  mode: "session" | "history";
  sessions: number;
  turns: number;
  /** Words (≈ tokens) per user message. */
  messageWords: number;
  maxTokens: number;
  /** Makes session ids unique per run. */
  runId: string;
  extraBody?: Record<string, unknown>;
}

/** One turn as the client saw it. */
export interface TurnRecord {
  session: number;
  turn: number;
  /** Time to the first streamed content, client side. */
  ttftMs: number;
  totalMs: number;
  promptTokens: number;
  cachedTokens: number;
  /** prompt − cached: what the server evaluated. */
  evaluatedTokens: number;
  completionTokens: number;
  /** `atlas.cache.outcome` (l1/l2/l3/miss); `prefix`/`miss` for servers without it. */
  tier: string;
  /** The server's own time to first token, when it reports one. */
  engineTtftMs: number | null;
}

/** Runs the sessions client in its own process. */
export function runSessions(spec: SessionsSpec): Promise<TurnRecord[]> {
  return runChild<TurnRecord[]>("sessions", { type: "run", spec });
}
