/**
 * `Engine`: one model, one llama.cpp context, `slots` sequences that generate in parallel.
 *
 * The engine turns one parsed `GenerateRequest` into a stream of text chunks and a `GenerateEnd`
 * (without `worker_id`, which the service adds). It owns:
 * - **slots**: a context with one sequence per slot; a request holds one slot from its first
 *   prompt token to its last generated token, waits in a bounded FIFO queue when none is free,
 *   and always gives it back (success, error or abort);
 * - **prefix reuse**: a slot keeps its tokens after a request; the next request on it evaluates
 *   only what differs from them (`usage.cached_tokens`), and a free slot holding the longest
 *   prefix of the prompt is preferred;
 * - **its own generation loop** on `LlamaContextSequence.evaluate`, rather than `LlamaChat` /
 *   `LlamaCompletion`: those drop the bytes of an unfinished UTF-8 character at the end of a
 *   reply, and a run of invalid bytes vanishes entirely (measured on 3.21.1: 40 invalid byte
 *   tokens gave `""`). Owning the loop gives exact tokens (and later `logprobs`), byte-exact text,
 *   OpenAI stop semantics and a context that never shifts silently;
 * - **text**: token bytes → {@link Utf8StreamDecoder} → {@link StopStringMatcher} → `onChunk`,
 *   always whole characters, U+FFFD for invalid bytes, never a lone surrogate;
 * - **grammars** for `response_format` (see `grammar.ts`), validated when they complete.
 *
 * @module
 */
import { randomInt } from "node:crypto";
import { resolve } from "node:path";
import { setImmediate as nextTick } from "node:timers/promises";
import { BusError } from "@atlas/bus";
import type { GenerateChunk, GenerateEnd, GenerateRequest } from "@atlas/contracts";
import { modelFingerprint, validateLlamaModel } from "@atlas/gguf";
import {
  type ChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  LlamaGrammarEvaluationState,
  LlamaLogLevel,
  type LlamaModel,
  resolveChatWrapper,
  type SequenceEvaluateOptions,
  type Token,
  TokenBias,
} from "node-llama-cpp";
import { DEFAULT_MAX_STRING_LENGTH, GrammarCache, type OutputGrammar } from "./grammar.ts";
import { fitHistory } from "./history.ts";
import { acquireLlama, type LlamaHandle, onLlamaLog } from "./llama.ts";
import { type RenderedPrompt, renderChat, renderCompletion, renderUpToReply } from "./prompt.ts";
import { alignReply } from "./reply.ts";
import { SlotPool } from "./slots.ts";
import { StopStringMatcher } from "./stop.ts";
import { TokenBytes } from "./token_bytes.ts";
import { Utf8StreamDecoder } from "./utf8.ts";

/** A generate request as the contract's schema outputs it (defaults applied). */
export type EngineRequest = ReturnType<typeof GenerateRequest.parse>;

/** How a generation ended: the contract's `GenerateEnd` without `worker_id`. */
export type EngineResult = Omit<ReturnType<typeof GenerateEnd.parse>, "worker_id" | "cache_tier" | "fencing_token" | "credit">;

/** A log function that takes fields and a message (pino's and console's shape). */
export type EngineLogFn = (fields: Record<string, unknown>, message: string) => void;

/** Where the engine logs; pino loggers fit. */
export interface EngineLogger {
  info: EngineLogFn;
  warn: EngineLogFn;
  error: EngineLogFn;
  debug: EngineLogFn;
}

/** Options for {@link Engine.load}. */
export interface EngineOptions {
  /** Path of the GGUF model. */
  modelPath: string;
  /** Sequences in the context: how many generations run at once. */
  slots: number;
  /**
   * Tokens per slot (each sequence gets the full size). llama.cpp rounds it up to a multiple of
   * 256; `info.contextSize` is the real size.
   */
  contextSize: number;
  /** CPU threads for prompt and decode. Use 1 with the prebuilt binary (see FACTS.md). */
  threads: number;
  /** Default: no logging. */
  logger?: EngineLogger;
  /** Local wait queue bound; more waiting requests are refused with `overloaded`. Default `4 × slots`. */
  maxQueue?: number;
  /** Length cap of JSON strings whose schema gives no `maxLength`. Default 256. */
  maxJsonStringLength?: number;
  /** Aborts loading. */
  signal?: AbortSignal;
}

/** What the loaded model and context are. */
export interface EngineInfo {
  /** `modelFingerprint` of the file: the same id on every worker with the same model. */
  readonly fingerprint: string;
  /** Tokens per slot, as llama.cpp created it. */
  readonly contextSize: number;
  readonly slots: number;
  /** `context_length` the model was trained with. */
  readonly trainContextLength: number;
  /** Number of weights. */
  readonly parameters?: number;
  /** `general.architecture`. */
  readonly architecture: string;
  /** Whether the model file has a chat template. */
  readonly chatTemplate: boolean;
}

/** Options for {@link Engine.generate}. */
export interface GenerateOptions {
  /** Aborts waiting and generating; the call then rejects with a `cancelled` `BusError`. */
  signal: AbortSignal;
  /** Receives the text as it is generated, in whole characters. Called synchronously; throwing aborts. */
  onChunk: (chunk: GenerateChunk) => void;
  /**
   * Generate on this slot, waiting for it if busy: the seam for session affinity (a session's
   * tokens live in one slot). Default: the free slot holding the longest prefix of the prompt.
   */
  slot?: number;
  /**
   * Added to the logits of these token ids, OpenAI's `logit_bias` semantics (−100 bans, +100
   * forces). End-of-generation tokens cannot be biased (node-llama-cpp skips them).
   */
  logitBias?: Readonly<Record<number, number>>;
  /**
   * Receives each generated token id (not end-of-generation tokens) before the text it completes
   * is emitted: for diagnostics and tests, and the seam for per-token data such as `logprobs`.
   */
  onToken?: (token: number) => void;
  /**
   * Runs once the slot is held and before the prompt is evaluated: the seam for the KV tiers
   * (snapshot the session the slot held, or restore the request's session from a snapshot).
   */
  prepare?: (slot: SlotAccess) => Promise<void>;
}

/** What {@link GenerateOptions.prepare} may do with the held slot. */
export interface SlotAccess {
  readonly slot: number;
  /** Tokens in the slot's KV cache. */
  readonly tokens: number;
  /** Writes the slot's KV state to `path`; resolves with its size in bytes. */
  save(path: string): Promise<number>;
  /** Replaces the slot's KV state with the one in `path` (same model only). */
  restore(path: string): Promise<void>;
}

/** The state of one slot, for heartbeats. */
export interface SlotState {
  readonly slot: number;
  readonly busy: boolean;
  /** Tokens held in the slot's KV cache. */
  readonly tokens: number;
}

/** Options for {@link EngineLoadError}. */
export interface EngineLoadErrorOptions {
  path: string;
  problems: readonly string[];
  cause?: unknown;
}

/** A model that cannot be loaded: missing, truncated, invalid, or refused by llama.cpp. */
export class EngineLoadError extends Error {
  override readonly name = "EngineLoadError";
  /** The model path. */
  readonly path: string;
  /** Every problem found (validation problems, or llama.cpp's own log lines). */
  readonly problems: readonly string[];

  constructor(message: string, options: EngineLoadErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.path = options.path;
    this.problems = options.problems;
  }
}

/** Generated tokens that presence and frequency penalties look back on (llama-server: 64). */
export const PENALTY_WINDOW = 256;

/** `top_k` applied when sampling with a temperature (llama.cpp's and llama-server's default). */
export const TOP_K = 40;

/** Temperatures below this are greedy decoding (see `#run`). */
export const MIN_TEMPERATURE = 1e-3;

const silent: EngineLogger = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} };

function positiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`Invalid engine option "${name}": expected a positive integer, got "${String(value)}"`);
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A seed as the sampler takes it: an unsigned 32-bit integer (node-llama-cpp clamps negatives to 0). */
function toSeed(seed: number | undefined): number {
  if (seed === undefined) return randomInt(0, 2 ** 32 - 1);
  return ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

interface Slot {
  readonly index: number;
  readonly sequence: LlamaContextSequence;
}

interface Parts {
  info: EngineInfo;
  handle: LlamaHandle;
  model: LlamaModel;
  context: LlamaContext;
  logger: EngineLogger;
  maxQueue: number | undefined;
  maxJsonStringLength: number;
  unsubscribeLog: () => void;
}

/** One model, one context, a pool of slots. Load with {@link Engine.load}; dispose when done. */
export class Engine implements AsyncDisposable {
  /** What is loaded. */
  readonly info: EngineInfo;
  readonly #handle: LlamaHandle;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #slots: Slot[];
  readonly #pool: SlotPool;
  readonly #wrapper: ChatWrapper | null;
  readonly #grammars: GrammarCache;
  readonly #bytes: TokenBytes;
  readonly #logger: EngineLogger;
  readonly #unsubscribeLog: () => void;
  readonly #active = new Set<Promise<unknown>>();
  #closing: BusError | undefined;
  #eog: Token[] | undefined;
  #disposed: Promise<void> | undefined;

  private constructor(parts: Parts) {
    this.info = parts.info;
    this.#handle = parts.handle;
    this.#model = parts.model;
    this.#context = parts.context;
    this.#logger = parts.logger;
    this.#unsubscribeLog = parts.unsubscribeLog;
    this.#slots = Array.from({ length: parts.info.slots }, (_, index) => ({ index, sequence: parts.context.getSequence() }));
    this.#pool = new SlotPool(parts.info.slots, parts.maxQueue === undefined ? {} : { maxQueue: parts.maxQueue });
    this.#wrapper = resolveChatWrapper(parts.model);
    this.#grammars = new GrammarCache(parts.handle.llama, { maxStringLength: parts.maxJsonStringLength });
    this.#bytes = new TokenBytes(parts.model);
  }

  /**
   * Validates the GGUF file (before llama.cpp sees it: some bad files abort the process), loads
   * the model and creates the context.
   *
   * @throws {EngineLoadError} for a missing, truncated or invalid file, or one llama.cpp refuses
   * (with llama.cpp's logged reason in `problems`).
   * @throws {RangeError} for invalid options.
   */
  static async load(options: EngineOptions): Promise<Engine> {
    positiveInteger("slots", options.slots);
    positiveInteger("contextSize", options.contextSize);
    positiveInteger("threads", options.threads);
    if (options.maxQueue !== undefined && (!Number.isSafeInteger(options.maxQueue) || options.maxQueue < 0)) {
      throw new RangeError(`Invalid engine option "maxQueue": expected a non-negative integer, got "${String(options.maxQueue)}"`);
    }
    const maxJsonStringLength = options.maxJsonStringLength ?? DEFAULT_MAX_STRING_LENGTH;
    positiveInteger("maxJsonStringLength", maxJsonStringLength);
    const logger = options.logger ?? silent;
    const path = resolve(options.modelPath);
    const { signal } = options;

    const validation = await validateLlamaModel(path, signal === undefined ? {} : { signal });
    if (!validation.ok) {
      throw new EngineLoadError(`Cannot load model "${path}": ${validation.problems.join("; ")}`, { path, problems: validation.problems });
    }
    for (const warning of validation.warnings) logger.warn({ model: path }, warning);
    signal?.throwIfAborted();
    let fingerprint: string;
    try {
      fingerprint = await modelFingerprint(path, signal === undefined ? {} : { signal });
    } catch (err) {
      throw new EngineLoadError(`Cannot read model "${path}": ${errorMessage(err)}`, { path, problems: [errorMessage(err)], cause: err });
    }

    const handle = await acquireLlama(options.threads);
    const logged: string[] = [];
    const unsubscribeLog = onLlamaLog((line) => {
      if (line.level === LlamaLogLevel.error || line.level === LlamaLogLevel.fatal) {
        logged.push(line.message);
        logger.error({ source: "llama.cpp" }, line.message);
      } else if (line.level === LlamaLogLevel.warn) {
        logger.warn({ source: "llama.cpp" }, line.message);
      } else {
        logger.debug({ source: "llama.cpp" }, line.message);
      }
    });
    const fail = async (what: string, err: unknown, model?: LlamaModel): Promise<never> => {
      await nextTick(); // node-llama-cpp delivers native log lines on a later tick
      unsubscribeLog();
      await model?.dispose().catch(() => {});
      await handle.release().catch(() => {});
      const problems = logged.length > 0 ? [...new Set(logged)] : [errorMessage(err)];
      // llama.cpp logs the reason, then generic "failed to load model" lines: name the reason.
      const reason = problems.find((p) => p.includes("error loading model: "))?.replace(/^.*?error loading model: /, "") ?? problems[0];
      throw new EngineLoadError(`${what} "${path}": ${reason}`, { path, problems, cause: err });
    };

    let model: LlamaModel;
    try {
      model = await handle.llama.loadModel({ modelPath: path, ...(signal === undefined ? {} : { loadSignal: signal }) });
    } catch (err) {
      return fail("Cannot load model", err);
    }
    let context: LlamaContext;
    try {
      context = await model.createContext({
        contextSize: options.contextSize,
        sequences: options.slots,
        threads: options.threads,
        ...(signal === undefined ? {} : { createSignal: signal }),
      });
    } catch (err) {
      return fail(`Cannot create a context of ${options.contextSize} tokens × ${options.slots} slots for model`, err, model);
    }

    const metadata = model.fileInfo.metadata as { general?: { architecture?: string } };
    const info: EngineInfo = {
      fingerprint,
      contextSize: context.contextSize,
      slots: options.slots,
      trainContextLength: model.trainContextSize,
      parameters: validation.info.parameterCount,
      architecture: metadata.general?.architecture ?? validation.info.architecture,
      chatTemplate: validation.info.hasChatTemplate,
    };
    if (info.contextSize > info.trainContextLength) {
      logger.warn(
        { contextSize: info.contextSize, trainContextLength: info.trainContextLength },
        "Context is larger than the model was trained for",
      );
    }
    const engine = new Engine({ info, handle, model, context, logger, maxQueue: options.maxQueue, maxJsonStringLength, unsubscribeLog });
    logger.info({ model: path, ...info, threads: options.threads, chatWrapper: engine.#wrapper?.wrapperName ?? null }, "Model loaded");
    return engine;
  }

  /** Slots not running a generation. */
  get freeSlots(): number {
    return this.#pool.free;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#pool.queued;
  }

  /** Each slot: busy or not, and how many tokens its KV cache holds. */
  slotStates(): SlotState[] {
    return this.#slots.map((s) => ({ slot: s.index, busy: this.#pool.isBusy(s.index), tokens: s.sequence.nextTokenIndex }));
  }

  /** Tokens of `text` as plain text (no special tokens, no beginning-of-sequence token). */
  countTokens(text: string): number {
    return this.#model.tokenize(text, false).length;
  }

  /**
   * Generates one sequence: waits for a slot, evaluates the prompt (reusing the slot's matching
   * prefix), streams whole-character text chunks to `onChunk` and resolves with how it ended.
   *
   * @throws {BusError} `bad_request` (prompt longer than the context, unsupported schema),
   * `overloaded` (queue full), `cancelled` (signal), `unavailable` (engine disposed),
   * `internal` (anything else, including grammar output that fails validation).
   */
  generate(request: EngineRequest, options: GenerateOptions): Promise<EngineResult> {
    const job = this.#generate(request, options).catch((err: unknown) => {
      throw BusError.from(err);
    });
    this.#active.add(job);
    const forget = () => this.#active.delete(job);
    job.then(forget, forget);
    return job;
  }

  async #generate(request: EngineRequest, options: GenerateOptions): Promise<EngineResult> {
    const { signal } = options;
    const aborted = () => {
      if (this.#closing !== undefined) throw this.#closing;
      if (signal.aborted) throw new BusError("cancelled", "The request was cancelled", { cause: signal.reason });
    };
    aborted();

    // Everything that can refuse the request runs before it takes a place in the queue.
    const contextSize = this.info.contextSize;
    const { prompt: fitted, dropped } = this.#fit(request, contextSize);
    let prompt = fitted;
    const param = request.messages === undefined ? "prompt" : "messages";
    if (prompt.tokens.length === 0) throw new BusError("bad_request", "The prompt is empty", { param });
    if (prompt.tokens.length >= contextSize) {
      throw new BusError(
        "bad_request",
        `This model's maximum context length is ${contextSize} tokens, but the prompt has ${prompt.tokens.length} tokens`,
        { param },
      );
    }
    const output = await this.#grammars.get(request.response_format);
    aborted();

    const queuedAt = performance.now();
    const lease = await this.#pool.acquire({
      signal,
      ...(options.slot === undefined ? {} : { slot: options.slot }),
      choose: (free) => this.#bestSlot(free, prompt.tokens),
    });
    const acquiredAt = performance.now();
    const slot = this.#slots[lease.slot]!;
    try {
      aborted();
      if (options.prepare !== undefined) {
        await options.prepare(this.#access(slot));
        aborted();
      }
      const continued = this.#continuation(slot, request, prompt.tokens);
      if (continued !== undefined && continued.length < contextSize) prompt = { ...prompt, tokens: continued };
      const { firstTokenAt, endedAt, ...run } = await this.#run(slot, request, prompt, output, options, aborted);
      return {
        ...run,
        history_dropped: dropped,
        slot: slot.index,
        timings: { queue_ms: acquiredAt - queuedAt, ttft_ms: firstTokenAt - acquiredAt, generation_ms: endedAt - firstTokenAt },
      };
    } catch (err) {
      if (err instanceof BusError) throw err;
      this.#logger.error({ request_id: request.request_id, slot: slot.index, err }, "Generation failed");
      // The sequence may hold half-evaluated state: start this slot from scratch next time.
      await slot.sequence.clearHistory().catch(() => {});
      throw new BusError("internal", `Generation failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      lease.release();
    }
  }

  /**
   * The prompt of a chat that continues the conversation this slot holds, built on the slot's
   * own tokens: the previous reply exactly as it was generated, then the tokens of what came
   * after it (end of turn, the new messages, the new model turn). Re-tokenizing the reply's text
   * often splits it differently, which would throw away the cache from the reply on (llama-server
   * re-evaluates ~115 tokens a turn for that reason). Undefined when the request does not
   * continue what the slot holds, or when the slot's tokens are already a prefix of the prompt.
   */
  #continuation(slot: Slot, request: EngineRequest, tokens: Token[]): Token[] | undefined {
    const messages = request.messages;
    if (messages === undefined || this.#wrapper === null) return undefined;
    const held = slot.sequence.contextTokens;
    if (held.length === 0) return undefined;
    let reply = -1;
    for (let i = messages.length - 2; i >= 0; i--) {
      if (messages[i]?.role === "assistant") {
        reply = i;
        break;
      }
    }
    if (reply < 0) return undefined;
    const shared = commonPrefixLength(held, tokens);
    if (shared >= held.length) return undefined; // the slot already holds a prefix of the prompt
    const upToReply = renderUpToReply(this.#model, this.#wrapper, messages.slice(0, reply + 1));
    // Not the conversation the slot holds (or the template left the reply out: an empty one).
    if (commonPrefixLength(upToReply, tokens) !== upToReply.length) return undefined;
    // The slot must hold the text of the conversation up to the reply (or a beginning of it: the
    // last sampled token is not evaluated until the next one is), tokenized its own way.
    const from = Math.min(shared, commonPrefixLength(held, upToReply));
    const eog = new Set(this.#eogTokens());
    const heldTail = held.slice(from);
    const replyTail = upToReply.slice(from);
    const lastHeld = heldTail.at(-1);
    const endsWithEog = lastHeld !== undefined && eog.has(lastHeld);
    const fit = alignReply(
      (endsWithEog ? heldTail.slice(0, -1) : heldTail).map((t) => this.#bytes.of(t)),
      replyTail.map((t) => this.#bytes.of(t)),
    );
    if (fit === undefined || !fit.whole) {
      const tail = (ts: Token[]) => JSON.stringify(Buffer.concat(ts.slice(-12).map((t) => this.#bytes.of(t))).toString("latin1"));
      this.#logger.debug(
        {
          request_id: request.request_id,
          kept: fit?.held ?? 0,
          held: heldTail.length,
          held_tail: tail(heldTail),
          reply_tail: tail(replyTail),
        },
        "The slot's reply differs from the rendered one: part of it is evaluated again",
      );
    }
    if (fit === undefined) return undefined;
    if (!fit.whole) {
      // Only a beginning of the reply matches (e.g. the template trimmed its end): keep that much
      // of the slot, evaluate the rest of the reply as the conversation has it now.
      return [...held.slice(0, from + fit.held), ...replyTail.slice(fit.reply), ...tokens.slice(upToReply.length)];
    }
    let after = [...replyTail.slice(fit.reply), ...tokens.slice(upToReply.length)];
    if (endsWithEog && after[0] === lastHeld) after = after.slice(1);
    return [...held, ...after];
  }

  /** Saves a slot's KV state when the slot is free (waits for it); resolves with the bytes and tokens. */
  async saveSlot(index: number, path: string, signal?: AbortSignal): Promise<{ bytes: number; tokens: number }> {
    const lease = await this.#pool.acquire({ slot: index, ...(signal === undefined ? {} : { signal }) });
    try {
      const access = this.#access(this.#slots[lease.slot]!);
      return { bytes: await access.save(path), tokens: access.tokens };
    } finally {
      lease.release();
    }
  }

  #access(slot: Slot): SlotAccess {
    const { sequence } = slot;
    return {
      slot: slot.index,
      get tokens() {
        return sequence.nextTokenIndex;
      },
      save: async (path) => (await sequence.saveStateToFile(path)).fileSize,
      restore: async (path) => {
        await sequence.clearHistory();
        await sequence.loadStateFromFile(path, { acceptRisk: true });
      },
    };
  }

  /**
   * The rendered prompt; with recalled history (`request.history`) that leaves less than the
   * reply's room (`max_tokens`, default a quarter of the context) the oldest layers are dropped
   * until it fits (`history.ts`).
   */
  #fit(request: EngineRequest, contextSize: number): { prompt: RenderedPrompt; dropped: number } {
    const marks = request.history;
    const messages = request.messages;
    if (marks === undefined || messages === undefined || marks.layers.length === 0) return { prompt: this.#render(request), dropped: 0 };
    const room = Math.max(1, Math.min(request.sampling.max_tokens ?? Math.floor(contextSize / 4), Math.floor(contextSize / 2)));
    const fitted = fitHistory(
      messages,
      marks,
      (m) => this.#render({ ...request, messages: m }),
      (p) => p.tokens.length + room <= contextSize,
    );
    if (fitted === undefined) return { prompt: this.#render(request), dropped: 0 }; // too long without history too: refused below
    if (fitted.dropped > 0) request.messages = fitted.messages;
    return { prompt: fitted.prompt, dropped: fitted.dropped };
  }

  #render(request: EngineRequest): RenderedPrompt {
    if (request.messages !== undefined) {
      if (this.#wrapper === null)
        throw new BusError("bad_request", "This model has no chat template; use a completion", { param: "messages" });
      return renderChat(this.#model, this.#wrapper, request.messages);
    }
    return renderCompletion(this.#model, request.prompt ?? "");
  }

  /** The free slot whose tokens share the longest prefix with the prompt; ties go to the least recently used. */
  #bestSlot(free: readonly number[], tokens: Token[]): number {
    let best = free[0]!;
    let bestLength = -1;
    for (const index of free) {
      const length = this.#slots[index]!.sequence.compareContextTokens(tokens).firstDifferentIndex;
      if (length > bestLength) {
        best = index;
        bestLength = length;
      }
    }
    return best;
  }

  async #run(
    slot: Slot,
    request: EngineRequest,
    prompt: RenderedPrompt,
    output: OutputGrammar | undefined,
    options: GenerateOptions,
    aborted: () => void,
  ): Promise<Omit<EngineResult, "slot" | "timings" | "history_dropped"> & { firstTokenAt: number; endedAt: number }> {
    const { sequence } = slot;
    const model = this.#model;
    const sampling = request.sampling;
    const tokens = prompt.tokens;
    const last = tokens.at(-1)!;

    // Reuse the longest prefix already in the slot; the last prompt token is always evaluated
    // again, because its logits are what the first generated token is sampled from.
    await sequence.adaptStateToTokens(tokens.slice(0, -1), false);
    const cached = sequence.nextTokenIndex;
    const batch = this.#context.batchSize;
    for (let i = cached; i < tokens.length - 1; i += batch) {
      aborted();
      await sequence.evaluateWithoutGeneratingNewTokens(tokens.slice(i, Math.min(i + batch, tokens.length - 1)));
    }
    aborted();

    const room = this.info.contextSize - tokens.length;
    const maxTokens = Math.min(sampling.max_tokens ?? room, room);
    const generated: Token[] = [];
    const penalties = sampling.presence_penalty !== 0 || sampling.frequency_penalty !== 0;
    // ignore_eos bans end-of-generation tokens, as llama-server does; not with a grammar, whose
    // only way to finish may be one.
    const banEog = sampling.ignore_eos && output === undefined;
    const evaluateOptions: SequenceEvaluateOptions = {
      // A vanishing temperature is greedy decoding. Sampled as given (1e-41), logits ÷ temperature
      // overflow, the sampler ignores the grammar's mask, llama.cpp then fails to accept the
      // token inside node-llama-cpp's batch dispatcher, and the sequence hangs for good.
      temperature: sampling.temperature < MIN_TEMPERATURE ? 0 : sampling.temperature,
      topP: sampling.top_p,
      topK: TOP_K,
      seed: toSeed(sampling.seed),
      yieldEogToken: true,
      ...(penalties
        ? {
            repeatPenalty: {
              punishTokens: () => generated.slice(-PENALTY_WINDOW),
              maxPunishTokens: PENALTY_WINDOW,
              penalty: 1,
              presencePenalty: sampling.presence_penalty,
              frequencyPenalty: sampling.frequency_penalty,
            },
          }
        : {}),
      ...(output === undefined ? {} : { grammarEvaluationState: new LlamaGrammarEvaluationState({ model, grammar: output.grammar }) }),
      ...(options.logitBias !== undefined || banEog ? { tokenBias: this.#tokenBias(options.logitBias ?? {}, banEog) } : {}),
    };

    // With a grammar, the chat template's text triggers would cut JSON strings that merely
    // contain them; end-of-generation tokens still apply.
    const userStops = new Set(sampling.stop);
    const stopStrings = [...sampling.stop, ...(output === undefined ? prompt.stopStrings : output.stopStrings)];
    const matcher = new StopStringMatcher(stopStrings, { holdTrailingWhitespace: output?.trimWhitespaceSuffix ?? false });
    const decoder = new Utf8StreamDecoder();
    let text = "";
    let tokensSinceChunk = 0;
    const emit = (piece: string) => {
      if (piece === "") return;
      text += piece;
      const chunk = { text: piece, tokens: tokensSinceChunk };
      tokensSinceChunk = 0;
      options.onChunk(chunk);
    };

    let finish: "stop" | "length" = "length";
    let stoppedBy: "eog" | "user" | "other" = "other";
    let firstTokenAt: number | undefined;
    const iterator = sequence.evaluate([last], evaluateOptions);
    try {
      while (generated.length < maxTokens) {
        const next = await iterator.next();
        firstTokenAt ??= performance.now();
        aborted();
        if (next.done === true) {
          finish = "stop";
          stoppedBy = "eog";
          break;
        }
        const token = next.value;
        if (model.isEogToken(token) || prompt.stopTokens.has(token)) {
          finish = "stop";
          stoppedBy = "eog";
          break;
        }
        generated.push(token);
        tokensSinceChunk++;
        options.onToken?.(token);
        const scan = matcher.push(decoder.push(this.#bytes.of(token)));
        emit(scan.text);
        if (scan.stopped) {
          finish = "stop";
          stoppedBy = scan.stop !== undefined && userStops.has(scan.stop) ? "user" : "other";
          break;
        }
        if (endsWithSequence(generated, prompt.stopTokenSequences)) {
          finish = "stop";
          stoppedBy = "eog";
          break;
        }
      }
    } finally {
      await iterator.return();
    }
    firstTokenAt ??= performance.now();

    // Flush: bytes of an unfinished character become U+FFFD; held text that was not a stop
    // string is released (minus trailing whitespace when the grammar trims it).
    if (!matcher.stopped) {
      const scan = matcher.push(decoder.end());
      emit(scan.text);
      if (scan.stopped) {
        finish = "stop";
        stoppedBy = scan.stop !== undefined && userStops.has(scan.stop) ? "user" : "other";
      } else {
        const rest = matcher.flush();
        emit(output?.trimWhitespaceSuffix === true ? rest.trimEnd() : rest);
      }
    }
    const endedAt = performance.now();

    if (output !== undefined && finish === "stop" && stoppedBy !== "user") {
      try {
        output.validate(text);
      } catch (err) {
        this.#logger.error({ request_id: request.request_id, text, err }, "Grammar output failed validation");
        throw new BusError("internal", `The generated output does not match the response format: ${errorMessage(err)}`, { cause: err });
      }
    }
    return {
      finish_reason: finish,
      usage: { prompt_tokens: tokens.length, completion_tokens: generated.length, cached_tokens: cached },
      firstTokenAt,
      endedAt,
    };
  }

  #tokenBias(logitBias: Readonly<Record<number, number>>, banEog: boolean): TokenBias {
    const bias = new TokenBias(this.#model.tokenizer);
    for (const [id, value] of Object.entries(logitBias)) {
      bias.set(Number(id) as Token, value <= -100 ? "never" : { logit: value });
    }
    if (banEog) {
      // `TokenBias.set` silently skips end-of-generation tokens; llama.cpp's logit-bias sampler
      // does not. node-llama-cpp is pinned, so its private map is a known shape; check it anyway.
      const biases = (bias as unknown as { _biases?: unknown })._biases;
      if (!(biases instanceof Map)) throw new Error("Cannot ban end-of-generation tokens: node-llama-cpp's TokenBias has changed");
      for (const token of this.#eogTokens()) biases.set(token, Number.NEGATIVE_INFINITY);
    }
    return bias;
  }

  /** Every end-of-generation token of the model (found once by asking llama.cpp about each token). */
  #eogTokens(): Token[] {
    if (this.#eog === undefined) {
      const model = this.#model;
      const size = this.#bytes.vocabularySize;
      const candidates =
        size === undefined
          ? [model.tokens.eos, model.tokens.eot].filter((t): t is Token => t !== null)
          : Array.from({ length: size }, (_, i) => i as Token);
      this.#eog = [...new Set(candidates.filter((t) => model.isEogToken(t)))];
    }
    return this.#eog;
  }

  /**
   * Stops taking requests, cancels running generations (`unavailable`), waits for them to give
   * their slots back, then frees the context, the model and the shared `Llama` reference.
   */
  dispose(): Promise<void> {
    this.#disposed ??= (async () => {
      this.#closing = new BusError("unavailable", "The engine is shutting down");
      this.#pool.close();
      // Running generations stop within one token; never let a stuck one hold shutdown forever.
      const settled = await Promise.race([
        Promise.allSettled([...this.#active]).then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 10_000).unref()),
      ]);
      if (!settled) this.#logger.warn({ active: this.#active.size }, "Disposing the engine with generations still running");
      await this.#context.dispose();
      await this.#model.dispose();
      this.#unsubscribeLog();
      await this.#handle.release();
    })();
    return this.#disposed;
  }

  /** Same as {@link dispose}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

function commonPrefixLength(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function endsWithSequence(tokens: readonly Token[], sequences: readonly (readonly Token[])[]): boolean {
  for (const seq of sequences) {
    if (seq.length === 0 || seq.length > tokens.length) continue;
    let match = true;
    for (let i = 1; i <= seq.length && match; i++) match = tokens[tokens.length - i] === seq[seq.length - i];
    if (match) return true;
  }
  return false;
}
