/**
 * The vocabulary of generated models: a small SentencePiece-style ("llama") vocabulary with
 * `<unk>`, the special tokens of the chat template family (ChatML by default), the 256
 * byte-fallback tokens and a few hundred word pieces.
 *
 * @module
 */
import { type ChatTemplateFamily, chatTemplateSpec } from "./chat_templates.ts";
import { TokenType } from "./format.ts";

/** The SentencePiece space marker (U+2581), which stands for " " inside token texts. */
export const SPACE_MARKER = "\u2581";

/** Ids of the special tokens of the generated ChatML vocabulary (the default family). */
export const SpecialTokenId = {
  unk: 0,
  bos: 1,
  /** `</s>`: kept for llama compatibility; the models never generate it. */
  eos: 2,
  imStart: 3,
  /** `<|im_end|>`: the end-of-generation token of generated models (their `eos_token_id`). */
  imEnd: 4,
} as const;

/**
 * Id of the first byte-fallback token `<0x00>` of the ChatML vocabulary; `<0xNN>` has id
 * `FIRST_BYTE_TOKEN_ID + 0xNN`. Other families: `Vocabulary.firstByteTokenId`.
 */
export const FIRST_BYTE_TOKEN_ID = 5;

/** Id of the first word-piece token of the ChatML vocabulary. Other families: `Vocabulary.firstPieceTokenId`. */
export const FIRST_PIECE_TOKEN_ID = FIRST_BYTE_TOKEN_ID + 256;

/** Ids of the tokens with a role in a vocabulary. */
export interface SpecialTokenIds {
  readonly unk: number;
  readonly bos: number;
  /** The end-of-generation token of the model (`eos_token_id`); the logit-bias channel gives it `eosBias`. */
  readonly eos: number;
  readonly eot: number;
  readonly eom?: number;
  readonly pad?: number;
}

/** A vocabulary, in the three parallel arrays GGUF stores. */
export interface Vocabulary {
  /** Token texts (`tokenizer.ggml.tokens`). */
  readonly tokens: readonly string[];
  /** SentencePiece scores (`tokenizer.ggml.scores`): higher merges first. */
  readonly scores: readonly number[];
  /** Token types (`tokenizer.ggml.token_type`). */
  readonly types: readonly TokenType[];
  /** The chat template family it was built for. */
  readonly family: ChatTemplateFamily;
  /** Ids of `<unk>`, bos, eos, eot (and eom, pad where the family has them). */
  readonly special: SpecialTokenIds;
  /** Id of every special token of the family (after `<unk>`), by text. */
  readonly specialIds: Readonly<Record<string, number>>;
  /** Id of `<0x00>`: `<0xNN>` has id `firstByteTokenId + 0xNN`. */
  readonly firstByteTokenId: number;
  /** Id of the first word piece (the space marker). */
  readonly firstPieceTokenId: number;
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
 * Builds the vocabulary of generated models of a chat template family (default ChatML):
 * `<unk>` (id 0), the family's special tokens, the 256 byte tokens, then the word pieces. It is
 * a pure function of the family: token ids are stable across presets and seeds, and the word
 * pieces are the same in every family (only their ids shift with the number of special tokens).
 */
export function buildVocabulary(family: ChatTemplateFamily = "chatml"): Vocabulary {
  const spec = chatTemplateSpec(family);
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
  for (const token of spec.tokens) add(token.text, token.type, 0);
  const firstByteTokenId = tokens.length;
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
  const firstPieceTokenId = tokens.length;
  for (const piece of pieces) add(piece, TokenType.NORMAL, piece.length);

  const specialIds: Record<string, number> = {};
  spec.tokens.forEach((token, i) => {
    specialIds[token.text] = 1 + i;
  });
  const id = (text: string) => specialIds[text]!;
  const special: SpecialTokenIds = {
    unk: 0,
    bos: id(spec.bos),
    eos: id(spec.eos),
    eot: id(spec.eot),
    ...(spec.eom === undefined ? {} : { eom: id(spec.eom) }),
    ...(spec.pad === undefined ? {} : { pad: id(spec.pad) }),
  };
  return { tokens, scores, types, family, special, specialIds, firstByteTokenId, firstPieceTokenId };
}
