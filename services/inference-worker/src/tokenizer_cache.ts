/**
 * A model's tokenizer with a memory: rendering a chat tokenizes the same pieces on every request
 * (the template's role markers such as `<|im_start|>user\n`, a system prompt the client repeats),
 * and each piece costs one to three calls into llama.cpp (node-llama-cpp tokenizes a piece after a
 * workaround token, then detokenizes it to check its leading spaces). Tokenizing is a pure
 * function of the model, the text and the options, so a remembered answer is the answer.
 *
 * Bounded: pieces up to {@link MAX_CACHED_CHARS} characters, at most {@link MAX_CACHED_PIECES}
 * of them, least recently used out first; longer texts go straight to the model.
 *
 * @module
 */
import type { LlamaModel, Token, Tokenizer } from "node-llama-cpp";

/** Longest text remembered, in UTF-16 code units. */
export const MAX_CACHED_CHARS = 2048;
/** Most pieces remembered per model (at most ~8 MiB of text and tokens). */
export const MAX_CACHED_PIECES = 1024;

/** A `Tokenizer` called as the plain function it is (its type is an overload set). */
export type TokenizeFn = (text: string, specialTokens?: boolean | "builtin", options?: "trimLeadingSpace") => Token[];

const tokenizers = new WeakMap<LlamaModel, Tokenizer>();

/** The model's tokenizer, remembering short pieces (see the module doc); one per model. */
export function cachedTokenizer(model: LlamaModel): Tokenizer {
  let tokenizer = tokenizers.get(model);
  if (tokenizer === undefined) {
    tokenizer = remembering(model.tokenizer);
    tokenizers.set(model, tokenizer);
  }
  return tokenizer;
}

/** Wraps `inner`; exported for tests. The arrays it returns are frozen: callers only read them. */
export function remembering(inner: Tokenizer, maxPieces = MAX_CACHED_PIECES): Tokenizer {
  const pieces = new Map<string, readonly Token[]>();
  const call = inner as TokenizeFn;
  const tokenize: TokenizeFn = (text, specialTokens, options) => {
    if (text.length > MAX_CACHED_CHARS) return call(text, specialTokens, options);
    const key = `${specialTokens === "builtin" ? "b" : specialTokens === true ? "s" : "t"}${options === undefined ? "" : "l"}\u0000${text}`;
    const hit = pieces.get(key);
    if (hit !== undefined) {
      pieces.delete(key); // most recently used goes last
      pieces.set(key, hit);
      return hit as Token[];
    }
    const tokens = Object.freeze(call(text, specialTokens, options));
    if (pieces.size >= maxPieces) pieces.delete(pieces.keys().next().value as string);
    pieces.set(key, tokens);
    return tokens as Token[];
  };
  return Object.assign(tokenize, {
    detokenize: inner.detokenize,
    isSpecialToken: inner.isSpecialToken,
    isEogToken: inner.isEogToken,
  }) as Tokenizer;
}
