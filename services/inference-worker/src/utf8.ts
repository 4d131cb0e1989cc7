/**
 * Streaming text out of token bytes: whole characters only, never an exception.
 *
 * A token is a byte string, not a string of characters: a byte-fallback token (`<0xF0>`) or a
 * byte-level BPE token can end in the middle of a UTF-8 sequence, and a random or badly trained
 * model can emit bytes that are no UTF-8 at all. {@link Utf8StreamDecoder} holds the bytes of an
 * unfinished character until it completes and replaces every invalid sequence with U+FFFD, the
 * way WHATWG `TextDecoder` (with `fatal: false`) does; {@link Utf8StreamDecoder.end} flushes held
 * bytes of a character that never completed as one U+FFFD. Its output never contains a lone
 * surrogate, so every chunk is valid UTF-16 and valid JSON string content.
 *
 * @module
 */

/** The replacement character emitted for invalid or unfinished UTF-8 sequences. */
export const REPLACEMENT_CHARACTER = "\uFFFD";

/**
 * An incremental UTF-8 decoder: feed it bytes as they arrive, get back the characters they
 * complete. Concatenating every {@link push} result and the {@link end} result gives exactly what
 * `new TextDecoder().decode(allBytes)` gives.
 */
export class Utf8StreamDecoder {
  readonly #decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

  /** Decodes `bytes`; returns the characters they complete (possibly `""`). */
  push(bytes: Uint8Array): string {
    return bytes.length === 0 ? "" : this.#decoder.decode(bytes, { stream: true });
  }

  /** Ends the stream: held bytes of an unfinished character become one U+FFFD. Resets the decoder. */
  end(): string {
    return this.#decoder.decode();
  }
}
