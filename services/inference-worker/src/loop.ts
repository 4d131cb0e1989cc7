/**
 * The generation loop of one sequence: evaluate what the slot does not hold of the prompt, then
 * sample token by token under the request's settings (temperature, top-p, top-k, penalties,
 * logit bias, the response format's grammar), stream whole characters, stop at the template's
 * stop tokens, the request's stop strings or `max_tokens`, and validate grammar output.
 *
 * @module
 */
import { randomInt } from "node:crypto";
import { BusError } from "@atlas/bus";
import type { TokenLogprob } from "@atlas/contracts";
import {
  type LlamaContext,
  LlamaGrammarEvaluationState,
  type LlamaModel,
  type SequenceEvaluateOptions,
  type Token,
  TokenBias,
} from "node-llama-cpp";
import {
  type EngineLogger,
  type EngineRequest,
  type EngineResult,
  errorMessage,
  type GenerateOptions,
  MIN_TEMPERATURE,
  PENALTY_WINDOW,
  type Slot,
  TOP_K,
} from "./engine_types.ts";
import type { OutputGrammar } from "./grammar.ts";
import { LogprobReporter, type SampledToken } from "./logprobs.ts";
import type { RenderedPrompt } from "./prompt.ts";
import { StopStringMatcher } from "./stop.ts";
import type { TokenBytes } from "./token_bytes.ts";
import { Utf8StreamDecoder } from "./utf8.ts";

/** A seed as the sampler takes it: an unsigned 32-bit integer (node-llama-cpp clamps negatives to 0). */
function toSeed(seed: number | undefined): number {
  if (seed === undefined) return randomInt(0, 2 ** 32 - 1);
  return ((seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
}

/** Runs generations on one model's context; holds what they share (the end-of-generation tokens). */
export class GenerationLoop {
  readonly #model: LlamaModel;
  readonly #batchSize: number;
  readonly #contextSize: number;
  readonly #bytes: TokenBytes;
  readonly #logger: EngineLogger;
  #eog: Token[] | undefined;

  constructor(parts: { model: LlamaModel; context: LlamaContext; contextSize: number; bytes: TokenBytes; logger: EngineLogger }) {
    this.#model = parts.model;
    this.#batchSize = parts.context.batchSize;
    this.#contextSize = parts.contextSize;
    this.#bytes = parts.bytes;
    this.#logger = parts.logger;
  }

  async run(
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
    const batch = this.#batchSize;
    for (let i = cached; i < tokens.length - 1; i += batch) {
      aborted();
      await sequence.evaluateWithoutGeneratingNewTokens(tokens.slice(i, Math.min(i + batch, tokens.length - 1)));
    }
    aborted();

    const room = this.#contextSize - tokens.length;
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
    // With logprobs: the entries of the tokens since the last chunk go out with the next one.
    const reporter = request.logprobs === undefined ? undefined : new LogprobReporter(this.#bytes, request.logprobs);
    let logprobs: TokenLogprob[] = [];
    const emit = (piece: string) => {
      if (piece === "") return;
      text += piece;
      const chunk = { text: piece, tokens: tokensSinceChunk, ...(reporter === undefined ? {} : { logprobs }) };
      tokensSinceChunk = 0;
      logprobs = [];
      options.onChunk(chunk);
    };

    let finish: "stop" | "length" = "length";
    let stoppedBy: "eog" | "user" | "other" = "other";
    let firstTokenAt: number | undefined;
    const iterator: AsyncGenerator<Token | SampledToken, void, void> =
      reporter === undefined
        ? sequence.evaluate([last], evaluateOptions)
        : sequence.evaluateWithMetadata([last], reporter.metadata, evaluateOptions);
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
        const sampled = next.value;
        const token = typeof sampled === "number" ? sampled : sampled.token;
        if (model.isEogToken(token) || prompt.stopTokens.has(token)) {
          finish = "stop";
          stoppedBy = "eog";
          break;
        }
        generated.push(token);
        tokensSinceChunk++;
        if (reporter !== undefined && typeof sampled !== "number") logprobs.push(reporter.entry(sampled));
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
      for (const token of this.eogTokens()) biases.set(token, Number.NEGATIVE_INFINITY);
    }
    return bias;
  }

  /** Every end-of-generation token of the model (found once by asking llama.cpp about each token). */
  /** The model's end-of-generation tokens (computed once). */
  eogTokens(): Token[] {
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
