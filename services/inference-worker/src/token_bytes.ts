/**
 * The exact bytes of a token, which node-llama-cpp does not give: `model.detokenize` returns a JS
 * string, so a byte-fallback token such as `<0xF0>` (one byte of a 4-byte character) comes back
 * as U+FFFD and the byte is lost. The vocabulary in the model's GGUF metadata keeps them:
 * SentencePiece (`llama`) vocabularies spell byte tokens `<0xNN>` and spaces `▁`; byte-level BPE
 * (`gpt2`) vocabularies map every byte to a printable code point. For other tokenizers the bytes
 * of `detokenize` are used (exact for tokens that are whole characters).
 *
 * @module
 */
import type { LlamaModel, Token } from "node-llama-cpp";

const SPM_SPACE = "\u2581";
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** GPT-2's byte-to-code-point table, inverted: code point → byte. */
function gpt2ByteDecoder(): Map<number, number> {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const set = new Set(printable);
  const decoder = new Map<number, number>();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (set.has(b)) decoder.set(b, b);
    else decoder.set(256 + n++, b);
  }
  return decoder;
}

interface Vocab {
  readonly kind: "spm" | "gpt2";
  readonly tokens: readonly string[];
  readonly types: readonly number[] | undefined;
}

function readVocab(model: LlamaModel): Vocab | undefined {
  const ggml = (model.fileInfo.metadata as { tokenizer?: { ggml?: Record<string, unknown> } }).tokenizer?.ggml;
  const kind = ggml?.["model"];
  const tokens = ggml?.["tokens"];
  const types = ggml?.["token_type"];
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) return undefined;
  const typeList = Array.isArray(types) && types.length === tokens.length ? (types as number[]) : undefined;
  if (kind === "llama") return { kind: "spm", tokens, types: typeList };
  if (kind === "gpt2") return { kind: "gpt2", tokens, types: typeList };
  return undefined;
}

/**
 * Maps tokens of one model to their bytes, computed on first use and cached.
 *
 * Control tokens (`<|im_end|>`, `<s>`) have no bytes: like llama-server, generated special tokens
 * are not rendered as text.
 */
export class TokenBytes {
  readonly #model: LlamaModel;
  readonly #vocab: Vocab | undefined;
  readonly #cache: Array<Uint8Array | undefined> = [];
  #gpt2: Map<number, number> | undefined;

  constructor(model: LlamaModel) {
    this.#model = model;
    this.#vocab = readVocab(model);
  }

  /** Whether bytes come from the vocabulary (exact for every token) rather than from `detokenize`. */
  get exact(): boolean {
    return this.#vocab !== undefined;
  }

  /** Tokens in the vocabulary, when the model's metadata lists them. */
  get vocabularySize(): number | undefined {
    return this.#vocab?.tokens.length;
  }

  /** The bytes `token` stands for in generated text. */
  of(token: Token): Uint8Array {
    const id = token as number;
    let bytes = this.#cache[id];
    if (bytes === undefined) {
      bytes = this.#compute(id);
      this.#cache[id] = bytes;
    }
    return bytes;
  }

  #compute(id: number): Uint8Array {
    const vocab = this.#vocab;
    const text = vocab?.tokens[id];
    if (vocab === undefined || text === undefined) return this.#fromDetokenize(id);
    const type = vocab.types?.[id] ?? TokenType.normal;
    if (type === TokenType.control || type === TokenType.unused) return EMPTY;
    if (type === TokenType.unknown) return this.#fromDetokenize(id);
    if (type === TokenType.userDefined) return encoder.encode(text);
    if (vocab.kind === "spm") {
      if (type === TokenType.byte) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
        return m === null ? this.#fromDetokenize(id) : Uint8Array.of(Number.parseInt(m[1]!, 16));
      }
      return encoder.encode(text.replaceAll(SPM_SPACE, " "));
    }
    this.#gpt2 ??= gpt2ByteDecoder();
    const out: number[] = [];
    for (const ch of text) {
      const b = this.#gpt2.get(ch.codePointAt(0)!);
      if (b === undefined) return encoder.encode(text); // not byte-level: take the text as it is
      out.push(b);
    }
    return Uint8Array.from(out);
  }

  #fromDetokenize(id: number): Uint8Array {
    const token = id as Token;
    if (this.#model.isEogToken(token) || this.#model.getTokenAttributes(token).control) return EMPTY;
    return encoder.encode(this.#model.detokenize([token], false));
  }
}
