/**
 * The tokens' log-probabilities of a choice in OpenAI's two shapes, from what the worker reports
 * (`GenerateChunk.logprobs`, contract `TokenLogprob`: computed by the engine from the
 * probabilities its sampler drew from, `services/inference-worker/src/logprobs.ts`):
 * - chat (`logprobs: true`, `top_logprobs` 0–20): `{ content: [{ token, logprob, bytes,
 *   top_logprobs }], refusal: null }`;
 * - legacy completions (`logprobs` 0–5): `{ tokens, token_logprobs, top_logprobs, text_offset }`,
 *   each `top_logprobs` entry holding the alternatives and the sampled token.
 * A stream's delta carries its own tokens' entries, with offsets that continue the choice's text.
 *
 * @module
 */
import type { TokenLogprob } from "@atlas/contracts";
import type { ChatLogprobs, TextLogprobs } from "./responses.ts";

/** A chat choice's (or delta's) `logprobs`. */
export function chatLogprobs(entries: readonly TokenLogprob[] | undefined): ChatLogprobs {
  return {
    content: (entries ?? []).map((e) => ({
      token: e.token,
      logprob: e.logprob,
      bytes: e.bytes,
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
    })),
    refusal: null,
  };
}

/** A completion choice's (or delta's) `logprobs`; `offset`: where its text starts in the choice's text. */
export function textLogprobs(entries: readonly TokenLogprob[] | undefined, offset: number): TextLogprobs {
  const out: TextLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const e of entries ?? []) {
    out.tokens.push(e.token);
    out.token_logprobs.push(e.logprob);
    // No prototype: a token may well be spelled "__proto__" or "constructor".
    const top = Object.create(null) as Record<string, number>;
    for (const t of e.top) top[t.token] ??= t.logprob;
    top[e.token] ??= e.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += e.token.length;
  }
  return out;
}
