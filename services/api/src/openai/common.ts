/**
 * Pieces both OpenAI endpoints share: parsing, model resolution, sampling defaults, usage,
 * the ATLAS response object (their schemas: `responses.ts`), and the abort that runs from the HTTP socket to llama.cpp.
 *
 * @module
 */
import { setMaxListeners } from "node:events";
import type { Config } from "@atlas/config";
import { ATLAS_VERSION, type GenerateEnd, type Sampling } from "@atlas/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ModelEntry } from "../catalog.ts";
import type { GenerateOutcome } from "../dispatch.ts";
import { apiError } from "../errors.ts";
import type { AtlasResponse, Usage } from "./responses.ts";
import type { AtlasOptions } from "./schemas.ts";

/** Refuses `atlas` when the extensions are off. */
export function checkAtlas(app: FastifyInstance, atlas: AtlasOptions | undefined): void {
  if (atlas !== undefined && !app.deps.config.ATLAS_ENABLED) {
    throw apiError("atlas_disabled", undefined, { param: "atlas" });
  }
}

/** Refuses a chat request with more messages than `ATLAS_MAX_MESSAGES`. */
export function checkMessageCount(app: FastifyInstance, count: number): void {
  const max = app.deps.config.ATLAS_MAX_MESSAGES;
  if (count > max) {
    throw apiError("too_many_messages", { count, max }, { param: "messages" });
  }
}

/** Most sequences (prompts × n) one request may run. */
export const MAX_SEQUENCES = 128;

/**
 * Tokens a finished request used (its prompt tokens, counted by `promptTokens`, plus every
 * sequence's completion), from the request's metrics trace; undefined when it did not succeed.
 */
export function usedTokens(req: FastifyRequest, promptTokens: (ends: GenerateEnd[]) => number): number | undefined {
  const trace = req.atlasTrace;
  if (trace === null || trace === undefined || trace.error !== null || trace.outcomes.length === 0) return undefined;
  const ends = trace.outcomes.map((o) => o.end);
  return promptTokens(ends) + ends.reduce((s, e) => s + e.usage.completion_tokens, 0);
}

/** `ATLAS_MODEL_ALIASES` as a map, alias → model id (made once per configuration). */
const aliasMaps = new WeakMap<Config, ReadonlyMap<string, string>>();
function aliasMap(config: Config): ReadonlyMap<string, string> {
  let map = aliasMaps.get(config);
  if (map === undefined) {
    map = new Map((config.ATLAS_MODEL_ALIASES ?? []).map((a) => [a.alias, a.model]));
    aliasMaps.set(config, map);
  }
  return map;
}

/** Whether `id` is a model of `ATLAS_MODELS` (the api knows it even before any of its workers is up). */
function configured(config: Config, id: string): boolean {
  return config.ATLAS_MODELS?.some((m) => m.id === id) === true;
}

/**
 * The model id a request's `model` names: the name itself when a model has that id (served,
 * remembered or in `ATLAS_MODELS`: a model's own id wins), else the model an alias of
 * `ATLAS_MODEL_ALIASES` stands for, else the name unchanged.
 */
export function modelIdOf(app: FastifyInstance, name: string): string {
  const { config } = app.deps;
  if (app.catalog.remembers(name) || configured(config, name)) return name;
  return aliasMap(config).get(name) ?? name;
}

/** The aliases of `ATLAS_MODEL_ALIASES` that stand for the model `id`. */
export function aliasesOf(app: FastifyInstance, id: string): string[] {
  return [...aliasMap(app.deps.config)].filter(([alias, model]) => model === id && modelIdOf(app, alias) === id).map(([alias]) => alias);
}

/**
 * The served model id a request's `model` resolves to, for metrics: the model's id (an alias
 * resolves to its model) when the api knows that model (served now, remembered, or in
 * `ATLAS_MODELS`), else undefined. So a label made of it takes only the cluster's model ids.
 */
export function knownModelId(app: FastifyInstance, name: string): string | undefined {
  const id = modelIdOf(app, name);
  return app.catalog.remembers(id) || configured(app.deps.config, id) ? id : undefined;
}

/**
 * The served model a request's `model` names (its id, or an alias of it), or why there is none:
 * a model the api knows (in `ATLAS_MODELS`, or served within the last minutes) whose workers are
 * all gone or draining gets `no_workers`, a 503 with `Retry-After`; so does any name while no
 * model is served at all (the workers are still starting); else OpenAI's 404 `model_not_found`.
 */
export async function resolveModel(app: FastifyInstance, name: string, signal?: AbortSignal): Promise<ModelEntry> {
  const id = modelIdOf(app, name);
  const model = await app.catalog.get(id, signal);
  if (model !== undefined) return model;
  if (app.catalog.remembers(id) || configured(app.deps.config, id)) {
    throw apiError("no_workers", { model: name }, { param: "model" });
  }
  if (app.catalog.list().length === 0) {
    throw apiError("no_workers");
  }
  throw apiError("model_not_found", { model: name }, { param: "model" });
}

/** Sampling arguments common to both endpoints, with OpenAI's defaults. */
export interface SamplingArgs {
  temperature?: number | null | undefined;
  top_p?: number | null | undefined;
  seed?: number | null | undefined;
  presence_penalty?: number | null | undefined;
  frequency_penalty?: number | null | undefined;
  ignore_eos?: boolean | undefined;
}

/** Resolves sampling for choice `index` (a given seed is offset per choice, so choices differ). */
export function samplingOf(args: SamplingArgs, maxTokens: number | null | undefined, stop: string[], index: number): Sampling {
  return {
    // top_p 0 keeps only the most likely token: greedy decoding.
    temperature: args.top_p === 0 ? 0 : (args.temperature ?? 1),
    top_p: args.top_p || 1,
    ...(args.seed == null ? {} : { seed: args.seed + index }),
    presence_penalty: args.presence_penalty ?? 0,
    frequency_penalty: args.frequency_penalty ?? 0,
    ...(maxTokens == null ? {} : { max_tokens: maxTokens }),
    stop,
    ignore_eos: args.ignore_eos ?? false,
  };
}

/** OpenAI's usage object from the sequences' end messages (the prompt is counted once per prompt). */
export function usageOf(ends: GenerateEnd[], promptTokens: number): Usage {
  const completion = ends.reduce((s, e) => s + e.usage.completion_tokens, 0);
  const cached = ends.reduce((s, e) => Math.max(s, e.usage.cached_tokens), 0);
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completion,
    total_tokens: promptTokens + completion,
    prompt_tokens_details: { cached_tokens: Math.min(cached, promptTokens), audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

/** Where the first sequence's prompt was found, as the worker reports it. */
export function cacheOutcome(outcome: GenerateOutcome | undefined): AtlasResponse["cache"] {
  const cached = outcome?.end.usage.cached_tokens ?? 0;
  const tier = outcome?.end.cache_tier ?? "miss";
  return { outcome: cached === 0 && tier === "l1" ? "miss" : tier, cached_tokens: cached };
}

/** The `atlas` response object, added only when the request carried `atlas`. */
export function atlasObject(
  atlas: AtlasOptions | undefined,
  outcomes: GenerateOutcome[],
  startedAt: number,
  recalledLayers?: number,
): { atlas?: AtlasResponse } {
  if (atlas === undefined) return {};
  const ends = outcomes.map((o) => o.end);
  // Recalled layers that made it into the prompt (the worker drops the oldest that do not fit).
  const memory =
    atlas.session_id === undefined || recalledLayers === undefined
      ? {}
      : { memory: { layers: Math.max(0, recalledLayers - (ends[0]?.history_dropped ?? 0)) } };
  return {
    atlas: {
      version: ATLAS_VERSION,
      ...(atlas.session_id === undefined ? {} : { session_id: atlas.session_id }),
      ...memory,
      cache: cacheOutcome(outcomes[0]),
      workers: [...new Set(ends.map((e) => e.worker_id))],
      slots: outcomes.map((o) => ({
        worker: o.end.worker_id,
        slot: o.end.slot,
        fencing_token: o.end.fencing_token ?? o.lease?.fencing_token ?? null,
      })),
      timings: {
        queue_ms: round(Math.max(0, ...ends.map((e) => e.timings.queue_ms))),
        ttft_ms: round(Math.min(...ends.map((e) => e.timings.ttft_ms))),
        generation_ms: round(Math.max(0, ...ends.map((e) => e.timings.generation_ms))),
        total_ms: round(performance.now() - startedAt),
      },
    },
  };
}

function round(ms: number): number {
  return Number.isFinite(ms) ? Math.round(ms * 1000) / 1000 : 0;
}

/** `fp_` plus the start of the model fingerprint, as OpenAI's `system_fingerprint`. */
export function systemFingerprint(model: ModelEntry): string {
  return `fp_${model.fingerprint.slice(0, 12)}`;
}

/** An id in OpenAI's style: `chatcmpl-…`, `cmpl-…`. */
export function completionId(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/** An AbortController that fires when the client goes away before the response is complete. */
export function abortOnDisconnect(req: FastifyRequest, reply: FastifyReply): AbortController {
  const ac = new AbortController();
  // Every sequence of the request (n × prompts, up to hundreds) listens on it while it runs, and
  // stops listening when it ends: many listeners are the fan-out, not a leak.
  setMaxListeners(0, ac.signal);
  const onClose = () => {
    if (!reply.raw.writableFinished) ac.abort(new Error("Client disconnected"));
  };
  // The client may already be gone (the request waited, e.g. for the model catalog).
  if (reply.raw.destroyed || req.raw.socket?.destroyed === true) onClose();
  else reply.raw.once("close", onClose);
  return ac;
}

/** Runs `fn` for each index in parallel and keeps the order. */
export function forEachChoice<T>(count: number, fn: (index: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => fn(i)));
}
