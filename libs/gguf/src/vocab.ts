/**
 * The vocabulary of generated models: a small SentencePiece-style ("llama") vocabulary with
 * control tokens for ChatML, the 256 byte-fallback tokens and a few hundred word pieces.
 *
 * @module
 */
import { TokenType } from "./format.ts";

/** The SentencePiece space marker (U+2581), which stands for " " inside token texts. */
export const SPACE_MARKER = "\u2581";

/** Ids of the special tokens of the generated vocabulary. */
export const SpecialTokenId = {
  unk: 0,
  bos: 1,
  /** `</s>`: kept for llama compatibility; the models never generate it. */
  eos: 2,
  imStart: 3,
  /** `<|im_end|>`: the end-of-generation token of generated models (their `eos_token_id`). */
  imEnd: 4,
} as const;

/** Id of the first byte-fallback token `<0x00>`; `<0xNN>` has id `FIRST_BYTE_TOKEN_ID + 0xNN`. */
export const FIRST_BYTE_TOKEN_ID = 5;

/** Id of the first word-piece token. */
export const FIRST_PIECE_TOKEN_ID = FIRST_BYTE_TOKEN_ID + 256;

/** A vocabulary, in the three parallel arrays GGUF stores. */
export interface Vocabulary {
  /** Token texts (`tokenizer.ggml.tokens`). */
  readonly tokens: readonly string[];
  /** SentencePiece scores (`tokenizer.ggml.scores`): higher merges first. */
  readonly scores: readonly number[];
  /** Token types (`tokenizer.ggml.token_type`). */
  readonly types: readonly TokenType[];
}

// Common English words, a few domain words and frequent suffixes. Every word is added as
// "▁word" together with all its prefixes, so the SentencePiece merge always reaches it.
const WORDS = (
  "the of and to in is you that it he was for on are as with his they at be this have from or one had " +
  "by word but not what all were we when your can said there use an each which she do how their if will " +
  "up other about out many then them these so some her would make like him into time has look two more " +
  "write go see number no way could people my than first water been call who its now find long down day " +
  "did get come made may part over new sound take only work know place year live me back give most " +
  "very after thing our just name good man think say great where help much before line " +
  "right too mean old any same tell boy came want show also form three small set put end " +
  "does well large must big even such turn here why ask went men read need land " +
  "home us move try kind hand again off play air away house point page letter " +
  "answer found still should world hello model token atlas node server request reply " +
  "stream queue test data file text chat user system assistant random seed light night blue green red"
).split(" ");

const SUFFIXES = ["ing", "ed", "er", "ly", "tion", "es", "s", "est", "ment", "ness"];

/**
 * Builds the vocabulary of generated models. It is a pure function of nothing: every generated
 * model has the same vocabulary, so token ids are stable across presets and seeds.
 */
export function buildVocabulary(): Vocabulary {
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: TokenType[] = [];
  const seen = new Set<string>();
  const add = (text: string, type: TokenType, score: number): void => {
    if (seen.has(text)) return;
    seen.add(text);
    tokens.push(text);
    scores.push(score);
    types.push(type);
  };

  add("<unk>", TokenType.UNKNOWN, 0);
  add("<s>", TokenType.CONTROL, 0);
  add("</s>", TokenType.CONTROL, 0);
  add("<|im_start|>", TokenType.CONTROL, 0);
  add("<|im_end|>", TokenType.CONTROL, 0);
  for (let b = 0; b < 256; b++) {
    add(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, TokenType.BYTE, 0);
  }

  // Word pieces: the space marker and every printable ASCII character first, so that any ASCII
  // text tokenizes without byte fallback; then words and their prefixes. Longer pieces score
  // higher, so the merge prefers them.
  const pieces: string[] = [SPACE_MARKER];
  for (let c = 0x21; c <= 0x7e; c++) pieces.push(String.fromCharCode(c));
  const withPrefixes = (piece: string): void => {
    for (let n = 2; n <= piece.length; n++) pieces.push(piece.slice(0, n));
  };
  for (const word of WORDS) {
    withPrefixes(SPACE_MARKER + word);
  }
  for (const suffix of SUFFIXES) withPrefixes(suffix);
  for (const piece of pieces) add(piece, TokenType.NORMAL, piece.length);

  return { tokens, scores, types };
}
