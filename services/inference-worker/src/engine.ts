import { BusError } from "@atlas/bus";
import { type ChatWrapper, type LlamaContext, type LlamaModel, resolveChatWrapper, type Token } from "node-llama-cpp";
import { type EngineParts, loadEngineParts, logLoaded } from "./engine_load.ts";
import {
  type EngineInfo,
  type EngineLogger,
  type EngineOptions,
  type EngineRequest,
  type EngineResult,
  errorMessage,
  type GenerateOptions,
  type Slot,
  type SlotAccess,
  type SlotState,
  type VramState,
} from "./engine_types.ts";
import { GrammarCache } from "./grammar.ts";
import type { LlamaHandle } from "./llama.ts";
import { GenerationLoop } from "./loop.ts";
import { PromptBuilder } from "./prompt_builder.ts";
import { SlotPool } from "./slots.ts";
import { TokenBytes } from "./token_bytes.ts";
import { ToolLoop } from "./tools.ts";

export {
  type EngineBackend,
  type EngineInfo,
  EngineLoadError,
  type EngineLoadErrorOptions,
  type EngineLogFn,
  type EngineLogger,
  type EngineOptions,
  type EngineRequest,
  type EngineResult,
  type GenerateOptions,
  MIN_TEMPERATURE,
  PENALTY_WINDOW,
  type SlotAccess,
  type SlotState,
  TOP_K,
  type VramState,
} from "./engine_types.ts";
export type { BinaryChoice, GpuChoice } from "./llama.ts";

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
  readonly #loop: GenerationLoop;
  readonly #tools: ToolLoop | undefined;
  readonly #prompts: PromptBuilder;
  readonly #logger: EngineLogger;
  readonly #unsubscribeLog: () => void;
  readonly #active = new Set<Promise<unknown>>();
  #closing: BusError | undefined;
  #disposed: Promise<void> | undefined;

  private constructor(parts: EngineParts) {
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
    this.#loop = new GenerationLoop({
      model: parts.model,
      context: parts.context,
      contextSize: parts.info.contextSize,
      bytes: this.#bytes,
      logger: parts.logger,
    });
    this.#tools =
      this.#wrapper === null
        ? undefined
        : new ToolLoop({
            llama: parts.handle.llama,
            model: parts.model,
            wrapper: this.#wrapper,
            maxStringLength: parts.maxJsonStringLength,
            logger: parts.logger,
          });
    this.#prompts = new PromptBuilder({
      model: parts.model,
      wrapper: this.#wrapper,
      bytes: this.#bytes,
      logger: parts.logger,
      eogTokens: () => this.#loop.eogTokens(),
    });
  }

  /**
   * Loads the model and creates the context (`engine_load.ts`: the GGUF file is validated before
   * llama.cpp sees it, as some bad files abort the process).
   *
   * @throws {EngineLoadError} for a missing, truncated or invalid file, or one llama.cpp refuses
   * (with llama.cpp's logged reason in `problems`).
   * @throws {RangeError} for invalid options.
   */
  static async load(options: EngineOptions): Promise<Engine> {
    const parts = await loadEngineParts(options);
    const engine = new Engine(parts);
    logLoaded(parts, engine.#wrapper?.wrapperName ?? null, options);
    return engine;
  }

  /** GPU memory now (total, used, free bytes), while a GPU is in use; null on the CPU. */
  async vram(): Promise<VramState | null> {
    if (this.info.backend.gpu === false) return null;
    const { total, used, free } = await this.#handle.llama.getVramState();
    return { total, used, free };
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
    const { prompt: fitted, dropped } = this.#prompts.fit(request, contextSize);
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
    if (request.tools !== undefined) {
      if (this.#tools === undefined)
        throw new BusError("bad_request", "This model has no chat template to call tools with", { param: "tools" });
      if (request.response_format.type !== "text") {
        throw new BusError("bad_request", "tools cannot be combined with a JSON response_format yet", { param: "response_format" });
      }
      this.#tools.check(request);
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
      let run: Awaited<ReturnType<GenerationLoop["run"]>>;
      if (request.tools !== undefined && this.#tools !== undefined) run = await this.#tools.run(slot, request, options, aborted);
      else {
        const continued = this.#prompts.continuation(slot.sequence.contextTokens, request, prompt.tokens);
        if (continued !== undefined && continued.length < contextSize) prompt = { ...prompt, tokens: continued };
        run = await this.#loop.run(slot, request, prompt, output, options, aborted);
      }
      const { firstTokenAt, endedAt, ...result } = run;
      return {
        ...result,
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
