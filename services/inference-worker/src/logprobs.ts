/**
 * Log-probabilities of generated tokens, as OpenAI reports them (`GenerateChunk.logprobs`,
 * contract `TokenLogprob`). node-llama-cpp gives, per sampled token, the probabilities of the
 * candidates its sampler chain left (temperature, top-k, top-p applied; greedy decoding keeps the
 * whole vocabulary), sorted most likely first, or only the chosen token's (`confidence`) when no
 * alternatives are wanted. Here they become ln p with each token's text and exact bytes.
 *
 * @module
 */
import type { TokenChoice, TokenLogprob } from "@atlas/contracts";
import type { Token } from "node-llama-cpp";
import type { TokenBytes } from "./token_bytes.ts";

/** The floor of a reported log-probability: OpenAI's value for "practically never" (ln 0 is −∞, not JSON). */
export const MIN_LOGPROB = -9999;

const decoder = new TextDecoder("utf-8", { fatal: false });

/** ln p, floored at {@link MIN_LOGPROB}. */
export function logOf(p: number): number {
  return p > 0 ? Math.max(Math.log(p), MIN_LOGPROB) : MIN_LOGPROB;
}

/** What the sampler said about one token: its probability, and the candidates' (most likely first). */
export interface SampledToken {
  token: Token;
  confidence?: number;
  probabilities?: ReadonlyMap<Token, number>;
}

/** Builds the reported entries of sampled tokens, with `top` alternatives each. */
export class LogprobReporter {
  readonly #bytes: TokenBytes;
  readonly #top: number;

  constructor(bytes: TokenBytes, top: number) {
    this.#bytes = bytes;
    this.#top = top;
  }

  /** What the sampler must return for this report: alternatives only when some are wanted. */
  get metadata(): { confidence: true; probabilities?: true } {
    return this.#top > 0 ? { confidence: true, probabilities: true } : { confidence: true };
  }

  /** The entry of one sampled token. */
  entry(sampled: SampledToken): TokenLogprob {
    const top: TokenChoice[] = [];
    if (this.#top > 0 && sampled.probabilities !== undefined) {
      for (const [token, p] of sampled.probabilities) {
        if (top.length >= this.#top) break;
        top.push(this.#choice(token, p));
      }
    }
    const p = sampled.confidence ?? sampled.probabilities?.get(sampled.token) ?? 0;
    return { ...this.#choice(sampled.token, p), top };
  }

  #choice(token: Token, p: number): TokenChoice {
    const bytes = this.#bytes.of(token);
    return { token: decoder.decode(bytes), bytes: Array.from(bytes), logprob: logOf(p) };
  }
}
