/**
 * The previous reply as the slot holds it and as the next request renders it. A returning turn
 * sends the reply back as text; re-tokenizing that text often splits it differently from the
 * tokens the model generated, and text cannot carry every byte the model generated (invalid
 * UTF-8 reaches the client as U+FFFD, an unfinished character at the end of a length-limited
 * reply as one U+FFFD). The reply counts as evaluated all the same: {@link alignReply} says how
 * much of the slot stands for it.
 *
 * @module
 */

const loose = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** How the slot's tokens of a reply line up with the rendered reply; counts of tokens. */
export interface ReplyAlignment {
  /** Tokens of the slot's reply that are kept. */
  held: number;
  /** Rendered tokens they stand for. */
  reply: number;
  /** All of the slot's reply stands for a beginning of the rendered one. */
  whole: boolean;
}

/**
 * Lines up the slot's reply tokens (`held`, the bytes of each) with the rendered ones (`reply`):
 * - `whole` when some beginning of `reply`, whole tokens, is the same text as all of `held`
 *   (the same bytes, or bytes that decode to the same characters: what the client saw);
 * - else the longest run of whole tokens on both sides with the same bytes (`whole: false`);
 * - undefined when not even that is there (nothing of the reply matches).
 */
export function alignReply(held: readonly Uint8Array[], reply: readonly Uint8Array[]): ReplyAlignment | undefined {
  const heldBytes = Buffer.concat(held);
  const replyBytes = Buffer.concat(reply);
  const heldEnds = tokenEnds(held);
  const replyEnds = tokenEnds(reply);
  let common = 0;
  while (common < heldBytes.length && common < replyBytes.length && heldBytes[common] === replyBytes[common]) common++;
  // The same bytes (the usual case), ending on a token boundary of the rendered reply.
  const exact = replyEnds.get(heldBytes.length) ?? (heldBytes.length === 0 ? 0 : undefined);
  if (common === heldBytes.length && exact !== undefined) return { held: held.length, reply: exact, whole: true };
  // The same text: a character is at least one byte and at most three per UTF-16 unit here
  // (U+FFFD is three bytes for what may have been one invalid byte), which bounds where to look.
  const heldText = loose.decode(heldBytes);
  for (const [bytes, j] of replyEnds) {
    if (bytes < heldText.length || bytes > 3 * heldBytes.length + 3) continue;
    if (loose.decode(replyBytes.subarray(0, bytes)) === heldText) return { held: held.length, reply: j, whole: true };
  }
  // The longest common run of bytes that ends on a token boundary on both sides.
  for (let c = common; c > 0; c--) {
    const h = heldEnds.get(c);
    const r = replyEnds.get(c);
    if (h !== undefined && r !== undefined) return { held: h, reply: r, whole: false };
  }
  return undefined;
}

/** Byte offset where each token ends → how many tokens end there (empty tokens share an end). */
function tokenEnds(parts: readonly Uint8Array[]): Map<number, number> {
  const at = new Map<number, number>();
  let n = 0;
  parts.forEach((p, i) => {
    n += p.length;
    at.set(n, i + 1);
  });
  return at;
}
