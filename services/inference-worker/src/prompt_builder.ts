/**
 * Turns a request into the tokens to evaluate: the rendered chat or completion, recalled history
 * fitted to the context (oldest layers dropped first, `history.ts`), and, for a chat that goes on
 * with the conversation a slot holds, a prompt built on that slot's own tokens, so the previous
 * reply counts as already evaluated (`reply.ts`).
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import type { ChatWrapper, LlamaModel, Token } from "node-llama-cpp";
import type { EngineLogger, EngineRequest } from "./engine_types.ts";
import { fitHistory } from "./history.ts";
import { type RenderedPrompt, renderChat, renderCompletion, renderUpToReply } from "./prompt.ts";
import { alignReply } from "./reply.ts";
import type { TokenBytes } from "./token_bytes.ts";

/** Renders and fits prompts for one model and chat template. */
export class PromptBuilder {
  readonly #model: LlamaModel;
  readonly #wrapper: ChatWrapper | null;
  readonly #bytes: TokenBytes;
  readonly #logger: EngineLogger;
  readonly #eogTokens: () => Token[];

  constructor(parts: {
    model: LlamaModel;
    wrapper: ChatWrapper | null;
    bytes: TokenBytes;
    logger: EngineLogger;
    eogTokens: () => Token[];
  }) {
    this.#model = parts.model;
    this.#wrapper = parts.wrapper;
    this.#bytes = parts.bytes;
    this.#logger = parts.logger;
    this.#eogTokens = parts.eogTokens;
  }

  /**
   * The prompt of a chat that continues the conversation this slot holds, built on the slot's
   * own tokens: the previous reply exactly as it was generated, then the tokens of what came
   * after it (end of turn, the new messages, the new model turn). Re-tokenizing the reply's text
   * often splits it differently, which would throw away the cache from the reply on (llama-server
   * re-evaluates ~115 tokens a turn for that reason). Undefined when the request does not
   * continue what the slot holds, or when the slot's tokens are already a prefix of the prompt.
   */
  continuation(held: readonly Token[], request: EngineRequest, tokens: Token[]): Token[] | undefined {
    const messages = request.messages;
    if (messages === undefined || this.#wrapper === null) return undefined;
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

  /**
   * The rendered prompt; with recalled history (`request.history`) that leaves less than the
   * reply's room (`max_tokens`, default a quarter of the context) the oldest layers are dropped
   * until it fits (`history.ts`).
   */
  fit(request: EngineRequest, contextSize: number): { prompt: RenderedPrompt; dropped: number } {
    const marks = request.history;
    const messages = request.messages;
    if (marks === undefined || messages === undefined || marks.layers.length === 0) return { prompt: this.render(request), dropped: 0 };
    const room = Math.max(1, Math.min(request.sampling.max_tokens ?? Math.floor(contextSize / 4), Math.floor(contextSize / 2)));
    const fitted = fitHistory(
      messages,
      marks,
      (m) => this.render({ ...request, messages: m }),
      (p) => p.tokens.length + room <= contextSize,
    );
    if (fitted === undefined) return { prompt: this.render(request), dropped: 0 }; // too long without history too: refused below
    if (fitted.dropped > 0) request.messages = fitted.messages;
    return { prompt: fitted.prompt, dropped: fitted.dropped };
  }

  render(request: EngineRequest): RenderedPrompt {
    if (request.messages !== undefined) {
      if (this.#wrapper === null)
        throw new BusError("bad_request", "This model has no chat template; use a completion", { param: "messages" });
      return renderChat(this.#model, this.#wrapper, request.messages);
    }
    return renderCompletion(this.#model, request.prompt ?? "");
  }
}

function commonPrefixLength(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
