/**
 * Generation with tools (OpenAI's function calling), on one slot's sequence, through
 * node-llama-cpp's `LlamaChat`: the model's own chat wrapper renders the functions and the
 * conversation's calls and results in its template's format (Llama 3.1, Qwen/Hermes `<tool_call>`,
 * or node-llama-cpp's generic syntax for templates without one) and detects a call as the model
 * starts one; from there the function's name and its arguments are sampled under a grammar, the
 * arguments' built from the function's JSON schema (checked by `grammar_schema.ts`), so they
 * always parse and match it.
 *
 * `tool_choice`:
 * - `auto`: the model answers in text or calls;
 * - `required`: the reply starts with a call — the template's call prefix is put at the start of
 *   the reply and the call is engaged from the first token (`functionCall.initiallyEngaged`);
 * - a named function: the same, with only that function offered.
 * `parallel_tool_calls: false` allows one call per reply.
 *
 * Text streams as it comes. A call's pieces (`GenerateChunk.tool_calls`) go out once the reply's
 * calls have passed node-llama-cpp's check of the arguments against the schema; a reply whose
 * call fails that check (what its grammar admits and its check refuses, see
 * {@link tightenJsonGrammars}) is sampled again with the next seed, at most 3 times, unless text
 * already went out. The end lists the calls whole, with ids `call_<random>`.
 *
 * @module
 */
import { randomBytes, randomInt } from "node:crypto";
import { BusError } from "@atlas/bus";
import type { ToolCall, ToolCallDelta } from "@atlas/contracts";
import {
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatWrapper,
  type ChatWrapperGenerateContextStateOptions,
  type Llama,
  LlamaChat,
  type LlamaModel,
  LlamaText,
} from "node-llama-cpp";
import type { EngineLogger, EngineRequest, GenerateOptions, Slot } from "./engine_types.ts";
import { errorMessage, MIN_TEMPERATURE, PENALTY_WINDOW, TOP_K } from "./engine_types.ts";
import { EXPONENT } from "./grammar.ts";
import { translateJsonSchema } from "./grammar_schema.ts";
import { toChatHistory } from "./prompt.ts";
import { cachedTokenizer } from "./tokenizer_cache.ts";

/** How a tool generation ended. */
export interface ToolRunResult {
  finish_reason: "stop" | "length" | "tool_calls";
  tool_calls?: ToolCall[];
  usage: { prompt_tokens: number; completion_tokens: number; cached_tokens: number };
  firstTokenAt: number;
  endedAt: number;
}

/** A new call id, as OpenAI spells them. */
function callId(): string {
  return `call_${randomBytes(12).toString("base64url")}`;
}

/** The functions node-llama-cpp offers the model, from the request's tools (only the named one when one is chosen). */
export function functionsOf(request: EngineRequest, maxStringLength: number): ChatModelFunctions {
  const choice = request.tool_choice;
  const named = typeof choice === "object" ? choice.name : undefined;
  const functions: Record<string, ChatModelFunctions[string]> = {};
  (request.tools ?? []).forEach((tool, i) => {
    if (named !== undefined && tool.name !== named) return;
    let params: ReturnType<typeof translateJsonSchema> | undefined;
    if (tool.parameters !== undefined && Object.keys(tool.parameters).length > 0) {
      try {
        params = translateJsonSchema(tool.parameters, { maxStringLength });
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        throw new BusError("bad_request", `Tool "${tool.name}": ${message}`, { param: `tools[${i}].function.parameters` });
      }
    }
    functions[tool.name] = {
      ...(tool.description === undefined ? {} : { description: tool.description }),
      ...(params === undefined ? {} : { params }),
    };
  });
  if (named !== undefined && functions[named] === undefined) {
    throw new BusError("bad_request", `tool_choice names the function "${named}", which is not in tools`, { param: "tool_choice" });
  }
  return functions;
}

/**
 * The model's wrapper with a call engaged from the reply's first token: the call prefix closes the
 * rendered context, and node-llama-cpp samples the function's name (then its arguments) under
 * grammar from there.
 */
function forcingCall(inner: ChatWrapper): ChatWrapper {
  const forced = Object.create(inner) as ChatWrapper;
  forced.generateContextState = (options: ChatWrapperGenerateContextStateOptions) => {
    const state = inner.generateContextState(options);
    return {
      contextText: LlamaText([state.contextText, LlamaText(inner.settings.functions.call.prefix)]),
      stopGenerationTriggers: state.stopGenerationTriggers,
      ...(state.ignoreStartText === undefined ? {} : { ignoreStartText: state.ignoreStartText }),
      functionCall: { initiallyEngaged: true, disengageInitiallyEngaged: [] },
    };
  };
  return forced;
}

const patchedBindings = new WeakSet<object>();

/** node-llama-cpp's rule for one unescaped character inside a JSON string. */
const STRING_CHAR = String.raw`[^"\\\x7F\x00-\x1F]`;
/** The same without characters outside the Basic Multilingual Plane (they stay writable as `\u` escape pairs). */
const BMP_STRING_CHAR = String.raw`[^"\\\x7F\x00-\x1F\U00010000-\U0010FFFF]`;

/**
 * Makes the JSON grammars this `Llama` compiles agree with the checks node-llama-cpp runs on
 * their output. node-llama-cpp builds a call's arguments grammar itself (inside `LlamaChat`), and
 * then validates the parsed arguments against the schema, which fails on what its own grammar
 * admitted: a number's exponent (`5e-3` for an integer, `1e400` = Infinity) and, under
 * `maxLength`, a character outside the Basic Multilingual Plane (one grammar character, two in
 * the check's JavaScript length). Every grammar's text is edited before it is compiled: no
 * exponents (as `patchJsonGrammar` does for `response_format`), and such characters only as
 * `\u` escape pairs. This is the one place that reaches the grammars `LlamaChat` makes: the
 * native grammar constructor, wrapped by a proxy. node-llama-cpp is pinned; the shapes are checked.
 */
export function tightenJsonGrammars(llama: Llama): void {
  const bindings = (llama as unknown as { _bindings?: { AddonGrammar?: unknown } })._bindings;
  if (bindings === undefined || patchedBindings.has(bindings)) return;
  const original = bindings.AddonGrammar;
  if (typeof original !== "function") throw new Error("Cannot constrain tool calls: node-llama-cpp's grammar binding has changed");
  bindings.AddonGrammar = new Proxy(original, {
    construct(target, args, newTarget) {
      if (typeof args[0] === "string") args[0] = tightenGrammarText(args[0]);
      return Reflect.construct(target, args, newTarget === bindings.AddonGrammar ? target : newTarget);
    },
  });
  patchedBindings.add(bindings);
}

/** The grammar text edits of {@link tightenJsonGrammars}. */
export function tightenGrammarText(grammar: string): string {
  return grammar.replace(EXPONENT, "").replaceAll(STRING_CHAR, BMP_STRING_CHAR);
}

/** A call's arguments as the stream spelled them (so both answers agree), else its parsed params re-serialized. */
function argumentsText(streamed: string | undefined, params: unknown): string {
  if (streamed !== undefined) {
    try {
      JSON.parse(streamed);
      return streamed;
    } catch {}
  }
  return JSON.stringify(params ?? {});
}

/** Attempts at a reply whose call node-llama-cpp refused (see {@link tightenJsonGrammars}). */
const MAX_CALL_ATTEMPTS = 3;

/** What one attempt gathered. */
interface AttemptState {
  generated: number;
  pendingTokens: number;
  firstTokenAt?: number;
  /** Text went out to the caller: the attempt cannot be taken back. */
  textSent: boolean;
  ids: string[];
  /** Each call's arguments text as generated. */
  args: string[];
  /** The call pieces, held until the calls are checked. */
  deltas: ToolCallDelta[];
}

/** Whether node-llama-cpp refused a call's arguments after generating them (its schema check). */
function isRejectedCall(err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name;
  const type = (err as object | null)?.constructor?.name;
  return [name, type].some((n) => n === "LlamaJsonSchemaValidationError" || n === "LlamaFunctionCallValidationError");
}

/** A seed as the sampler takes it: an unsigned 32-bit integer. */
function toSeed(seed: number | undefined): number {
  return seed === undefined ? randomInt(0, 2 ** 32 - 1) : ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** Runs tool generations on one model (shares its wrapper). */
export class ToolLoop {
  readonly #model: LlamaModel;
  readonly #wrapper: ChatWrapper;
  readonly #maxStringLength: number;
  readonly #logger: EngineLogger;

  constructor(parts: { llama: Llama; model: LlamaModel; wrapper: ChatWrapper; maxStringLength: number; logger: EngineLogger }) {
    tightenJsonGrammars(parts.llama);
    this.#logger = parts.logger;
    this.#model = parts.model;
    this.#wrapper = parts.wrapper;
    this.#maxStringLength = parts.maxStringLength;
  }

  /** Checks what can be refused before the request takes a slot (schemas, the named function, the history). */
  check(request: EngineRequest): void {
    functionsOf(request, this.#maxStringLength);
    toChatHistory(request.messages ?? []);
  }

  async run(slot: Slot, request: EngineRequest, options: GenerateOptions, aborted: () => void): Promise<ToolRunResult> {
    const functions = functionsOf(request, this.#maxStringLength);
    const history = toChatHistory(request.messages ?? []);
    const forced = request.tool_choice !== undefined && request.tool_choice !== "auto";
    const before = slot.sequence.contextTokens;
    const wrapper = forced ? forcingCall(this.#wrapper) : this.#wrapper;
    // The prompt as the wrapper renders it (what LlamaChat evaluates before the reply), for usage.
    const promptTokens = wrapper
      .generateContextState({ chatHistory: history, availableFunctions: functions, documentFunctionParams: true })
      .contextText.tokenize(cachedTokenizer(this.#model)).length;
    const chat = new LlamaChat({ contextSequence: slot.sequence, chatWrapper: wrapper, autoDisposeSequence: false });
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal.reason);
    options.signal.addEventListener("abort", onAbort, { once: true });
    const seed = toSeed(request.sampling.seed);
    try {
      for (let attempt = 0; ; attempt++) {
        const state: AttemptState = { generated: 0, pendingTokens: 0, textSent: false, ids: [], args: [], deltas: [] };
        try {
          const result = await this.#attempt(
            chat,
            history,
            functions,
            request,
            (seed + attempt) % 2 ** 32,
            state,
            options,
            controller.signal,
            aborted,
          );
          aborted();
          // The calls checked out: their pieces go out now, in order.
          for (const delta of state.deltas) options.onChunk({ text: "", tokens: 0, tool_calls: [delta] });
          if (state.pendingTokens > 0) options.onChunk({ text: "", tokens: state.pendingTokens });
          const calls = (result.functionCalls ?? []).map(
            (c, i): ToolCall => ({
              id: state.ids[i] ?? callId(),
              type: "function",
              function: { name: c.functionName, arguments: argumentsText(state.args[i], c.params) },
            }),
          );
          const stop = result.metadata.stopReason;
          const endedAt = performance.now();
          const held = slot.sequence.contextTokens;
          let cached = 0;
          while (cached < before.length && cached < held.length && before[cached] === held[cached]) cached++;
          return {
            finish_reason: calls.length > 0 ? "tool_calls" : stop === "maxTokens" ? "length" : "stop",
            ...(calls.length > 0 ? { tool_calls: calls } : {}),
            usage: {
              prompt_tokens: promptTokens,
              // Call tokens are not reported to onToken: count what the slot holds past the prompt.
              completion_tokens: Math.max(state.generated, held.length - promptTokens),
              cached_tokens: Math.min(cached, promptTokens),
            },
            firstTokenAt: state.firstTokenAt ?? endedAt,
            endedAt,
          };
        } catch (err) {
          // node-llama-cpp refused a call its own grammar let through (see `tightenJsonGrammars`):
          // sample it again with the next seed, unless text already went out.
          if (!isRejectedCall(err) || state.textSent || attempt >= MAX_CALL_ATTEMPTS - 1) throw err;
          this.#logger.warn(
            { request_id: request.request_id, attempt, err: errorMessage(err) },
            "A tool call failed its schema check; sampling it again",
          );
        }
      }
    } finally {
      options.signal.removeEventListener("abort", onAbort);
      await chat.dispose({ disposeSequence: false });
    }
  }

  /** One generation: text streams at once; call pieces are kept in `state` until the calls are checked. */
  #attempt(
    chat: LlamaChat,
    history: ChatHistoryItem[],
    functions: ChatModelFunctions,
    request: EngineRequest,
    seed: number,
    state: AttemptState,
    options: GenerateOptions,
    signal: AbortSignal,
    aborted: () => void,
  ) {
    const sampling = request.sampling;
    const penalties = sampling.presence_penalty !== 0 || sampling.frequency_penalty !== 0;
    return chat.generateResponse(history, {
      functions,
      documentFunctionParams: true,
      ...(request.parallel_tool_calls === false ? { maxParallelFunctionCalls: 1 } : {}),
      temperature: sampling.temperature < MIN_TEMPERATURE ? 0 : sampling.temperature,
      topP: sampling.top_p,
      topK: TOP_K,
      seed,
      ...(sampling.max_tokens === undefined ? {} : { maxTokens: sampling.max_tokens }),
      ...(sampling.stop.length === 0 ? {} : { customStopTriggers: sampling.stop }),
      ...(penalties
        ? {
            repeatPenalty: {
              lastTokens: PENALTY_WINDOW,
              penalty: 1,
              presencePenalty: sampling.presence_penalty,
              frequencyPenalty: sampling.frequency_penalty,
            },
          }
        : {}),
      signal,
      onToken: (tokens) => {
        state.firstTokenAt ??= performance.now();
        state.generated += tokens.length;
        state.pendingTokens += tokens.length;
        for (const t of tokens) options.onToken?.(t);
        aborted();
      },
      onTextChunk: (text) => {
        if (text === "") return;
        state.textSent = true;
        options.onChunk({ text, tokens: state.pendingTokens });
        state.pendingTokens = 0;
      },
      onFunctionCallParamsChunk: (chunk) => {
        const first = state.ids[chunk.callIndex] === undefined;
        if (first) state.ids[chunk.callIndex] = callId();
        state.args[chunk.callIndex] = (state.args[chunk.callIndex] ?? "") + chunk.paramsChunk;
        const delta: ToolCallDelta = { index: chunk.callIndex, arguments: chunk.paramsChunk };
        state.deltas.push(first ? { ...delta, id: state.ids[chunk.callIndex] as string, name: chunk.functionName } : delta);
      },
    });
  }

  /** The model (for tests). */
  get model(): LlamaModel {
    return this.#model;
  }
}
