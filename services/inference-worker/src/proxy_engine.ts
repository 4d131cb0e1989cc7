/**
 * `ProxyEngine`: the worker's generation backend when `ATLAS_WORKER_BACKEND=openai`. It holds as
 * many slots as the upstream runs requests at once (`proxy_upstream.ts`), and runs each sequence
 * as one streamed request to the upstream (the official `openai` client: SSE, abort through the
 * request's `AbortSignal`, no retries of its own — the api and the scheduler decide those),
 * turning the upstream's chunks into `GenerateChunk`s and its end into the engine's result
 * (`proxy_map.ts`).
 *
 * What a slot "holds" here is the token count of its last sequence (the upstream's `usage`):
 * the scheduler keeps a session on the slot that holds tokens of it, so affinity and leases work
 * as for a local worker. With llama-server upstream the slot is the upstream's own slot
 * (`id_slot`), whose prompt cache really holds them.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from "openai";
import type { ChatCompletionCreateParamsStreaming, CompletionCreateParamsStreaming } from "openai/resources";
import type { EngineRequest, EngineResult, GenerateOptions, GenerationBackend, SlotState } from "./engine_types.ts";
import { StreamMapper, type UpstreamFailure, upstreamCall, upstreamError, upstreamFault } from "./proxy_map.ts";
import { type Discovered, withoutSecrets } from "./proxy_upstream.ts";
import { SlotPool } from "./slots.ts";

/** A proxy slot's KV state is the upstream's: it cannot be saved or restored here (no KV tiers). */
const noKvState = (): Promise<never> =>
  Promise.reject(new BusError("bad_request", "A proxy worker's slots hold no KV state of their own to save or restore"));

/** Options for {@link ProxyEngine}. */
export interface ProxyEngineOptions {
  /** The upstream's OpenAI base URL, `/v1` included. */
  url: string;
  apiKey?: string | undefined;
  /** What discovery found (slots, model, kind). */
  upstream: Discovered;
  /**
   * Hears a request that could not reach the upstream, or that it refused for the proxy's own
   * configuration (404, 401, 403): the health turns `down` at once.
   */
  onUpstreamFault?: (err: unknown) => void;
  /** Local wait queue bound (`overloaded` beyond it). Default `4 × slots`. */
  maxQueue?: number;
}

/** A generation backend that forwards to an OpenAI-compatible server. */
export class ProxyEngine implements GenerationBackend {
  readonly info: { readonly slots: number; readonly contextSize: number; readonly fingerprint: string };
  readonly upstream: Discovered;
  readonly #client: OpenAI;
  readonly #pool: SlotPool;
  /** Per slot: the tokens of its last sequence (prompt and reply, as the upstream counted them). */
  readonly #tokens: number[];
  readonly #closing = new AbortController();
  readonly #running = new Set<Promise<unknown>>();
  readonly #onUpstreamFault: (err: unknown) => void;
  /** The upstream URL (it may hold secrets: errors pass through `withoutSecrets`). */
  readonly #url: string;

  constructor(options: ProxyEngineOptions) {
    const d = options.upstream;
    this.upstream = d;
    this.info = { slots: d.slots, contextSize: d.ctxSize, fingerprint: d.fingerprint };
    this.#pool = new SlotPool(d.slots, options.maxQueue === undefined ? {} : { maxQueue: options.maxQueue });
    this.#tokens = Array.from({ length: d.slots }, () => 0);
    this.#onUpstreamFault = options.onUpstreamFault ?? (() => {});
    this.#url = options.url;
    // apiKey is always given (never OPENAI_API_KEY from the environment); a server without keys ignores it.
    // The URL's query (`?api-key=`) goes with every request; the client would append paths to it.
    const base = new URL(options.url);
    const defaultQuery = Object.fromEntries(base.searchParams);
    base.search = "";
    this.#client = new OpenAI({ baseURL: base.toString(), apiKey: options.apiKey ?? "none", maxRetries: 0, defaultQuery });
  }

  get freeSlots(): number {
    return this.#pool.free;
  }

  get queued(): number {
    return this.#pool.queued;
  }

  slotStates(): SlotState[] {
    return this.#tokens.map((tokens, slot) => ({ slot, busy: this.#pool.isBusy(slot), tokens }));
  }

  /** Runs one sequence upstream; every failure is a `BusError` (`cancelled` when `signal` aborted it). */
  async generate(request: EngineRequest, options: GenerateOptions): Promise<EngineResult> {
    const signal = AbortSignal.any([options.signal, this.#closing.signal]);
    const t0 = performance.now();
    const held = await this.#pool.acquire({ signal, ...(options.slot === undefined ? {} : { slot: options.slot }) });
    const run = this.#run(request, options, held.slot, signal, performance.now() - t0);
    this.#running.add(run);
    try {
      return await run;
    } finally {
      this.#running.delete(run);
      held.release();
    }
  }

  async #run(request: EngineRequest, options: GenerateOptions, slot: number, signal: AbortSignal, queueMs: number): Promise<EngineResult> {
    try {
      await options.prepare?.({ slot, tokens: this.#tokens[slot] ?? 0, save: noKvState, restore: noKvState });
      const call = upstreamCall(request, this.upstream.model, this.upstream.kind, slot);
      const mapper = new StreamMapper(call.endpoint, request.logprobs !== undefined);
      const sent = performance.now();
      let first: number | undefined;
      // The body is OpenAI's shape plus the upstream's own extensions (ignore_eos, id_slot), which
      // the client sends as given.
      const stream =
        call.endpoint === "chat"
          ? await this.#client.chat.completions.create(call.body as unknown as ChatCompletionCreateParamsStreaming, { signal })
          : await this.#client.completions.create(call.body as unknown as CompletionCreateParamsStreaming, { signal });
      for await (const data of stream as AsyncIterable<unknown>) {
        const chunk = mapper.push(data);
        if (chunk === undefined) continue;
        first ??= performance.now();
        options.onChunk(chunk);
      }
      // The client ends a stream quietly when the request is aborted between chunks.
      if (signal.aborted) throw signal.reason;
      const end = mapper.end();
      const done = performance.now();
      this.#tokens[slot] = end.usage.prompt_tokens + end.usage.completion_tokens;
      return {
        ...end,
        slot,
        history_dropped: 0,
        timings: { queue_ms: queueMs, ttft_ms: (first ?? done) - sent, generation_ms: first === undefined ? 0 : done - first },
      };
    } catch (err) {
      // What the slot held is unknown after a failure: it holds nothing the scheduler may count on.
      this.#tokens[slot] = 0;
      throw this.#busError(err, signal);
    }
  }

  #busError(err: unknown, signal: AbortSignal): BusError {
    if (signal.aborted) {
      const reason: unknown = signal.reason;
      if (reason instanceof BusError) return reason;
      if (this.#closing.signal.aborted) return new BusError("unavailable", "The worker is shutting down");
      return new BusError("cancelled", "The request was cancelled; the upstream request was aborted", { cause: reason });
    }
    if (err instanceof BusError) return err;
    if (err instanceof APIUserAbortError) return new BusError("cancelled", "The upstream request was aborted");
    if (err instanceof APIConnectionTimeoutError)
      return upstreamError({ status: undefined, error: undefined, message: err.message, connection: "timeout" });
    if (err instanceof APIConnectionError) {
      this.#onUpstreamFault(err);
      const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
      const message = withoutSecrets(`${err.message}${cause}`, this.#url);
      return upstreamError({ status: undefined, error: undefined, message, connection: "failed" });
    }
    if (err instanceof APIError) {
      const retry = Number(err.headers?.get("retry-after"));
      const failure: UpstreamFailure = {
        status: err.status,
        error: err.error,
        message: err.message,
        retryAfterS: Number.isFinite(retry) && retry > 0 ? retry : undefined,
      };
      const mapped = upstreamError(failure);
      if (upstreamFault(failure)) this.#onUpstreamFault(mapped);
      return mapped;
    }
    const raw = err instanceof Error ? err.message : String(err);
    const message = withoutSecrets(raw, this.#url);
    // The cause only when its message holds no secret of the URL (it may be logged whole).
    return new BusError("internal", `The proxy failed: ${message}`, message === raw ? { cause: err } : {});
  }

  /** Refuses new requests, aborts the running ones (their upstream requests too) and waits for them. */
  async dispose(): Promise<void> {
    this.#pool.close("The worker is shutting down");
    this.#closing.abort();
    await Promise.allSettled([...this.#running]);
  }
}
