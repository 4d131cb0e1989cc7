/**
 * Stop strings on a text stream, OpenAI-style: the output ends right before the first stop
 * string and never contains it, even when the stop string arrives split across chunks. Text that
 * might be the start of a stop string is held back until it is clearly not.
 *
 * @module
 */

/** Options for {@link StopStringMatcher}. */
export interface StopStringMatcherOptions {
  /**
   * Also hold back trailing whitespace until non-whitespace follows, so that a caller that trims
   * the end of the output never has to take back text it streamed. Default `false`.
   */
  holdTrailingWhitespace?: boolean;
}

/** What {@link StopStringMatcher.push} found. */
export interface StopScan {
  /** Text that is safe to emit now. */
  readonly text: string;
  /** Whether a stop string was found; `text` then ends right before it. */
  readonly stopped: boolean;
  /** The stop string found (the earliest in the text; the longest among those starting there). */
  readonly stop?: string;
}

/** Finds stop strings in streamed text. */
export class StopStringMatcher {
  readonly #stops: readonly string[];
  readonly #holdWhitespace: boolean;
  #held = "";
  #stopped = false;

  constructor(stops: readonly string[], options: StopStringMatcherOptions = {}) {
    this.#stops = [...new Set(stops.filter((s) => s.length > 0))];
    this.#holdWhitespace = options.holdTrailingWhitespace ?? false;
  }

  /** Whether a stop string was found. Later input is ignored. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Text currently held back. */
  get held(): string {
    return this.#held;
  }

  /** Adds text; returns what can be emitted. */
  push(text: string): StopScan {
    if (this.#stopped) return { text: "", stopped: true };
    const buffer = this.#held + text;
    let first = -1;
    let found: string | undefined;
    for (const stop of this.#stops) {
      const i = buffer.indexOf(stop);
      if (i !== -1 && (first === -1 || i < first || (i === first && stop.length > found!.length))) {
        first = i;
        found = stop;
      }
    }
    if (found !== undefined) {
      this.#stopped = true;
      this.#held = "";
      return { text: buffer.slice(0, first), stopped: true, stop: found };
    }
    let cut = buffer.length - this.#partialStopLength(buffer);
    if (this.#holdWhitespace) cut = trailingWhitespaceStart(buffer, cut);
    cut = surrogateSafe(buffer, cut);
    this.#held = buffer.slice(cut);
    return { text: buffer.slice(0, cut), stopped: false };
  }

  /** Ends the stream: returns the held text (which turned out not to be a stop string). */
  flush(): string {
    const rest = this.#held;
    this.#held = "";
    return rest;
  }

  /** Length of the longest suffix of `buffer` that is a proper prefix of a stop string. */
  #partialStopLength(buffer: string): number {
    let best = 0;
    for (const stop of this.#stops) {
      for (let n = Math.min(stop.length - 1, buffer.length); n > best; n--) {
        if (buffer.endsWith(stop.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}

function trailingWhitespaceStart(text: string, end: number): number {
  let i = end;
  while (i > 0 && /\s/.test(text[i - 1]!)) i--;
  return i;
}

/** Moves a cut that would split a surrogate pair back by one. */
function surrogateSafe(text: string, cut: number): number {
  if (cut > 0 && cut < text.length) {
    const before = text.charCodeAt(cut - 1);
    const after = text.charCodeAt(cut);
    if (before >= 0xd800 && before <= 0xdbff && after >= 0xdc00 && after <= 0xdfff) return cut - 1;
  }
  return cut;
}
