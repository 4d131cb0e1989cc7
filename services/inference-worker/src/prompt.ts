/**
 * From a request to the tokens the model reads, and what ends its reply.
 *
 * Chat: OpenAI messages become node-llama-cpp chat history (system and developer → system,
 * assistant → model) and are rendered by the model's chat wrapper (`"auto"` picks it from the
 * GGUF chat template; ChatML for the generated test models). A fresh, empty model turn is always
 * appended, so a trailing assistant message is a finished turn, as in OpenAI's API. The wrapper's
 * stop triggers end the reply: special tokens (`<|im_end|>`) by token, plain text by text.
 *
 * Completion: the prompt is plain text after the beginning-of-sequence token the model wants,
 * as `LlamaCompletion` tokenizes it; no template, and special-token text in the prompt is not
 * parsed as special tokens.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import type { EngineMessage } from "@atlas/contracts";
import {
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelResponse,
  type ChatWrapper,
  type LlamaModel,
  type LlamaText,
  SpecialToken,
  SpecialTokensText,
  type Token,
} from "node-llama-cpp";
import { cachedTokenizer } from "./tokenizer_cache.ts";

/** One chat message (the contract's `EngineMessage`). */
export type PromptMessage = EngineMessage;

/** A rendered prompt. */
export interface RenderedPrompt {
  /** The tokens to evaluate, beginning-of-sequence token included. */
  readonly tokens: Token[];
  /** Tokens that end the reply besides the model's end-of-generation tokens. */
  readonly stopTokens: ReadonlySet<Token>;
  /** Token sequences that end the reply (multi-token special triggers). */
  readonly stopTokenSequences: readonly (readonly Token[])[];
  /** Text that ends the reply (excluded from it). */
  readonly stopStrings: readonly string[];
}

/**
 * Maps OpenAI messages to chat history, with a model turn to generate into: an empty one, or —
 * when the conversation ends with tool results — the assistant turn that made those calls, which
 * the reply continues. An assistant's `tool_calls` become the turn's function calls, each with its
 * result: node-llama-cpp keeps a call and its result together, so every call needs its `tool`
 * message (matched by `tool_call_id`) and every `tool` message its call.
 *
 * @throws {BusError} `bad_request` (param `messages`) for a call without a result or a result without a call.
 */
export function toChatHistory(messages: readonly PromptMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const open = new Map<string, ChatModelFunctionCall>(); // calls still waiting for their result
  const missing = () => {
    const id = open.keys().next().value;
    return new BusError("bad_request", `The assistant's tool call "${id}" has no tool message with its result`, { param: "messages" });
  };
  let endsWithResults = false;
  for (const m of messages) {
    if (m.role === "tool") {
      const call = m.tool_call_id === undefined ? undefined : open.get(m.tool_call_id);
      if (call === undefined) {
        throw new BusError("bad_request", `A tool message answers no preceding tool call ("${m.tool_call_id ?? ""}")`, {
          param: "messages",
        });
      }
      call.result = m.content;
      open.delete(m.tool_call_id as string);
      endsWithResults = true;
      continue;
    }
    if (open.size > 0) throw missing();
    endsWithResults = false;
    switch (m.role) {
      case "user":
        history.push({ type: "user", text: m.content });
        break;
      case "assistant": {
        const response: ChatModelResponse["response"] = m.content === "" && m.tool_calls !== undefined ? [] : [m.content];
        for (const c of m.tool_calls ?? []) {
          const call: ChatModelFunctionCall = {
            type: "functionCall",
            name: c.function.name,
            params: parseArguments(c.function.arguments),
            result: undefined,
          };
          response.push(call);
          open.set(c.id, call);
        }
        history.push({ type: "model", response });
        break;
      }
      default:
        history.push({ type: "system", text: m.content });
    }
  }
  if (open.size > 0) throw missing();
  if (!endsWithResults) history.push({ type: "model", response: [] });
  return history;
}

/** A call's arguments as the history keeps them: parsed JSON, or the text itself when it is not JSON. */
function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Tokens of a conversation up to and including its last assistant message, rendered as an
 * unfinished model turn (no end-of-turn after the reply): the text a slot holds after it
 * generated that reply.
 */
export function renderUpToReply(model: LlamaModel, wrapper: ChatWrapper, messages: readonly PromptMessage[]): Token[] {
  const history = toChatHistory(messages);
  history.pop(); // the reply itself is the last, unfinished model turn
  const state = wrapper.generateContextState({ chatHistory: history });
  return state.contextText.tokenize(cachedTokenizer(model));
}

/** Renders chat messages with `wrapper` and tokenizes them. */
export function renderChat(model: LlamaModel, wrapper: ChatWrapper, messages: readonly PromptMessage[]): RenderedPrompt {
  const state = wrapper.generateContextState({ chatHistory: toChatHistory(messages) });
  const tokens = state.contextText.tokenize(cachedTokenizer(model));
  const stopTokens = new Set<Token>();
  const stopTokenSequences: (readonly Token[])[] = [];
  const stopStrings: string[] = [];
  for (const trigger of state.stopGenerationTriggers) classifyTrigger(model, trigger, stopTokens, stopTokenSequences, stopStrings);
  return { tokens, stopTokens, stopTokenSequences, stopStrings };
}

/** Tokenizes a raw completion prompt. */
export function renderCompletion(model: LlamaModel, prompt: string): RenderedPrompt {
  const bos = model.tokens.bos;
  const prependBos = bos !== null && model.tokens.shouldPrependBosToken;
  const text = model.tokenize(prompt, false, prependBos ? "trimLeadingSpace" : undefined);
  return {
    tokens: prependBos ? [bos, ...text] : text,
    stopTokens: new Set(),
    stopTokenSequences: [],
    stopStrings: [],
  };
}

/** What one stop trigger is: text to match, or the tokens it stands for (none: the model lacks them). */
type TriggerKind = { text: string } | { tokens: readonly Token[] };

/**
 * Each model's classified stop triggers, by the trigger's JSON: a chat wrapper gives the same few
 * triggers for every request, and resolving a special token means a tokenizer call per request.
 * Bounded: a wrapper whose triggers vary per request only ever refills it.
 */
const triggerCache = new WeakMap<LlamaModel, Map<string, TriggerKind>>();
const TRIGGER_CACHE_MAX = 256;

function classifyTrigger(
  model: LlamaModel,
  trigger: LlamaText,
  tokens: Set<Token>,
  sequences: (readonly Token[])[],
  strings: string[],
): void {
  let cache = triggerCache.get(model);
  if (cache === undefined) {
    cache = new Map();
    triggerCache.set(model, cache);
  }
  const key = triggerKey(trigger);
  let kind = cache.get(key);
  if (kind === undefined) {
    kind = resolveTrigger(model, trigger);
    if (cache.size >= TRIGGER_CACHE_MAX) cache.clear();
    cache.set(key, kind);
  }
  if ("text" in kind) {
    if (kind.text !== "") strings.push(kind.text);
  } else if (kind.tokens.length === 1) tokens.add(kind.tokens[0]!);
  else if (kind.tokens.length > 1) sequences.push(kind.tokens); // shared: nobody writes a prompt's stop sequences
}

/** A trigger's identity as a string: each value with its kind (text, special text, special token). */
function triggerKey(trigger: LlamaText): string {
  let key = "";
  for (const v of trigger.values) {
    if (typeof v === "string") key += `s${v}\u0000`;
    else if (v instanceof SpecialTokensText) key += `x${v.value}\u0000`;
    else if (v instanceof SpecialToken) key += `t${v.value}\u0000`;
    else key += `j${JSON.stringify(v)}\u0000`;
  }
  return key;
}

function resolveTrigger(model: LlamaModel, trigger: LlamaText): TriggerKind {
  const values = trigger.values;
  if (values.every((v) => typeof v === "string")) return { text: values.join("") };
  try {
    return { tokens: trigger.tokenize(model.tokenizer) };
  } catch {
    return { tokens: [] }; // a special token this model does not have (for example no EOS): nothing to stop on
  }
}
