/**
 * Conversation continuity for `POST /v1/chat/completions` with `atlas.session_id`.
 *
 * Before dispatch, {@link recallMemory} asks persistence once (`memory.recall`) for the
 * session's history that fits: the last `memory_layers` layers (default: all), and in any case
 * only as many of the newest as fit twice the tokens left in the model's context after the
 * request's own messages and the reply's `max_tokens` (default a quarter of the context), tokens
 * estimated as bytes ÷ 2 plus 8 per message. The estimate errs towards too many layers on
 * purpose: the worker counts real tokens and drops the oldest recalled layers that do not fit
 * (`GenerateRequest.history`, `services/inference-worker/src/history.ts`).
 * Persistence owns the stored data and that selection; the api computes the budget and builds
 * the prompt, because both depend on this HTTP request: the request's leading system/developer
 * messages, then the recalled messages (oldest first), then the rest of the request's messages.
 * When the request has its own leading system/developer messages, those inside recalled layers
 * are left out (the request's instructions win).
 *
 * After the answer, {@link MemoryTurn.commit} appends the exchange (the request's messages plus
 * choice 0's reply, with its usage) with one `memory.add`, or through the durable fallback
 * stream when persistence does not answer. When persistence cannot be reached at recall, the
 * answer is served without recall and carries `x-atlas-degraded: memory`; the append still lands.
 *
 * @module
 */
import { type EngineMessage, estimateTokens, fitLayers, type GenerateEnd, type MemoryLayer } from "@atlas/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AuditEvent, audit } from "../audit.ts";
import type { ModelEntry } from "../catalog.ts";
import { markDegraded } from "../degraded.ts";
import type { AtlasOptions } from "../openai/schemas.ts";
import type { StreamShape } from "../openai/stream.ts";
import { layerUsage, memoryClient } from "./client.ts";

/** How long a recall waits for persistence before answering without memory. */
const RECALL_TIMEOUT_MS = 3000;

// The token rule is shared with persistence, which fits the layers (`@atlas/contracts`).
export { estimateTokens, fitLayers };

/** The prompt: leading system/developer messages, recalled messages, then the rest (see the module doc). */
export function buildPrompt(request: readonly EngineMessage[], recalled: readonly EngineMessage[]): EngineMessage[] {
  return placeHistory(request, recalled).messages;
}

/**
 * {@link buildPrompt}, and where the recalled layers sit in it (`GenerateRequest.history`) when
 * their sizes are known: from `start`, each layer's messages, oldest first (instructions left out
 * of a layer do not count).
 */
export function placeHistory(
  request: readonly EngineMessage[],
  recalled: readonly EngineMessage[],
  layerSizes?: readonly number[],
): { messages: EngineMessage[]; history?: { start: number; layers: number[] } } {
  const isInstruction = (m: EngineMessage) => m.role === "system" || m.role === "developer";
  let lead = 0;
  while (lead < request.length && isInstruction(request[lead] as EngineMessage)) lead++;
  const keep = (m: EngineMessage) => lead === 0 || !isInstruction(m);
  const history = recalled.filter(keep);
  const messages = [...request.slice(0, lead), ...history, ...request.slice(lead)];
  if (layerSizes === undefined || layerSizes.length === 0) return { messages };
  const layers: number[] = [];
  let at = 0;
  for (const size of layerSizes) {
    const kept = recalled.slice(at, at + size).filter(keep).length;
    at += size;
    if (kept > 0) layers.push(kept);
  }
  return layers.length === 0 ? { messages } : { messages, history: { start: lead, layers } };
}

/** One chat turn's memory: the prompt to send, and how to store the exchange afterwards. */
export interface MemoryTurn {
  /** The request's messages with the recalled history placed before them. */
  readonly messages: EngineMessage[];
  /** Where the recalled layers sit in `messages` (the worker may drop the oldest to fit). */
  readonly history?: { start: number; layers: number[] };
  /** Layers recalled into the prompt. */
  readonly recalled: number;
  /**
   * Persistence answered that the session has nothing stored: it has never run a turn, so no
   * worker can hold its KV state in L2 or L3 and the worker need not look (one JetStream lookup
   * less on a session's first turn). False whenever that is not known for sure.
   */
  readonly fresh: boolean;
  /** Wraps a stream shape to capture choice 0's text and end (streamed answers). */
  tap<S extends StreamShape>(shape: S): S;
  /** Appends the exchange (choice 0) through the stream; a no-op without a session or an answer. */
  commit(outcome?: { text: string; end: GenerateEnd }): void;
}

/** Input of {@link recallMemory}. */
export interface RecallInput {
  atlas: AtlasOptions | undefined;
  model: ModelEntry;
  /** The request's own messages (flattened). */
  messages: EngineMessage[];
  maxTokens?: number | null | undefined;
  /** The request's own: a client that goes away ends the recall. */
  signal?: AbortSignal;
}

/** Recalls the session of a chat request (see the module doc); without a session it changes nothing. */
export async function recallMemory(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  input: RecallInput,
): Promise<MemoryTurn> {
  const sessionId = input.atlas?.session_id;
  if (sessionId === undefined) {
    return { messages: input.messages, recalled: 0, fresh: false, tap: (s) => s, commit: () => {} };
  }
  const client = memoryClient(app);
  const tenant = req.tenant;
  const ctx = input.model.ctx_size > 0 ? input.model.ctx_size : Number.POSITIVE_INFINITY;
  const reserve = input.maxTokens ?? Math.floor(ctx / 4);
  // Twice the estimated room: the estimate (bytes ÷ 2) is too high for most tokenizers (~4 bytes
  // a token) and too low for byte-level ones; the worker, which counts real tokens, drops the
  // oldest recalled layers that do not fit (GenerateRequest.history).
  const budget = 2 * (ctx - estimateTokens(input.messages) - reserve);
  let recalled: EngineMessage[] = [];
  let layerSizes: number[] | undefined;
  let layers = 0;
  let fresh = false;
  if (budget > 0) {
    try {
      // Read your writes: the recall names this api's appends still in flight (persistence answers
      // once their records have reached it), instead of waiting here for their acknowledgements.
      const r = await client.recall(tenant, sessionId, {
        requestId: req.id,
        timeoutMs: RECALL_TIMEOUT_MS,
        ...(input.signal === undefined ? {} : { signal: input.signal }),
        maxLayers: input.atlas?.memory_layers,
        budgetTokens: Number.isFinite(budget) ? budget : undefined,
      });
      recalled = r.messages;
      layerSizes = r.layerSizes;
      layers = r.layers;
      fresh = !r.found || r.layersTotal === 0;
      const outcome = r.found ? "ok" : "not_found";
      audit(req, { event: AuditEvent.memoryRecall, outcome, session: sessionId, ...(r.found ? { detail: { layers } } : {}) });
    } catch (err) {
      if (input.signal?.aborted === true) throw err; // the client went away: nothing to answer
      audit(req, { event: AuditEvent.memoryRecall, outcome: "unavailable", session: sessionId });
      req.log.warn({ err, requestId: req.id }, "Session memory is unreachable; answering without recall");
      markDegraded(reply, "memory");
    }
  }
  const { messages, history } = placeHistory(input.messages, recalled, layerSizes);
  // The api's own request ids are unique; a client's x-request-id may repeat, so it gets a suffix.
  const layerId = req.headers["x-request-id"] === req.id ? `${req.id}~${crypto.randomUUID().slice(0, 8)}` : req.id;
  let text = "";
  let end: GenerateEnd | undefined;
  return {
    messages,
    ...(history === undefined ? {} : { history }),
    recalled: layers,
    fresh,
    tap: (shape) => ({
      ...shape,
      delta: (index, chunk) => {
        if (index === 0) text += chunk.text;
        return shape.delta(index, chunk);
      },
      finish: (index, e) => {
        if (index === 0) end = e;
        return shape.finish(index, e);
      },
    }),
    commit: (outcome) => {
      const final = outcome ?? (end === undefined ? undefined : { text, end });
      if (final === undefined) return; // the answer never finished: nothing to remember
      const layer: MemoryLayer = {
        id: layerId,
        created_at: new Date().toISOString(),
        messages: [
          ...input.messages,
          { role: "assistant", content: final.text, ...(final.end.tool_calls === undefined ? {} : { tool_calls: final.end.tool_calls }) },
        ],
        usage: layerUsage(final.end.usage),
      };
      const written = { event: AuditEvent.memoryWrite, session: sessionId, detail: { layer: layerId } };
      client.append({ tenant, sessionId, model: input.model.id, layer }).then(
        (how) => audit(req, { ...written, outcome: "ok", detail: { layer: layerId, via: how } }),
        (err: unknown) => {
          audit(req, { ...written, outcome: "lost" });
          req.log.error({ err, requestId: req.id }, "Session memory append was lost");
        },
      );
    },
  };
}
