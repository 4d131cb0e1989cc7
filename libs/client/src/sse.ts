/**
 * A small Server-Sent Events parser (the WHATWG "event stream" format): bytes in, one message per
 * blank line out. No SSE library is a dependency of the workspace, and `fetch` + this is all
 * `metrics.subscribe()` needs (headers such as `Authorization` and `Last-Event-ID` included,
 * which a browser's `EventSource` cannot send).
 *
 * @module
 */

/** One dispatched message. */
export interface SseMessage {
  /** The `id:` field of this message, if it had one. */
  id: string | undefined;
  /** The `event:` field; `message` when absent. */
  event: string;
  /** The `data:` lines, joined with `\n`. */
  data: string;
  /** The `retry:` field (reconnection time in ms), if this message had one. */
  retry: number | undefined;
}

/** Parses an event stream; ends when the stream ends (a message without its blank line is dropped, as the spec says). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  let buffer = "";
  let fields = fresh();
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buffer);
        // A `\r` at the very end may be the first half of `\r\n`: wait for the next chunk.
        if (m === null || (!done && m[0] === "\r" && m.index === buffer.length - 1)) break;
        const line = buffer.slice(0, m.index);
        buffer = buffer.slice(m.index + m[0].length);
        if (line === "") {
          if (fields.data !== undefined) yield { id: fields.id, event: fields.event ?? "message", data: fields.data, retry: fields.retry };
          fields = fresh();
          continue;
        }
        if (line.startsWith(":")) continue; // a comment (the server's heartbeat)
        const colon = line.indexOf(":");
        const name = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") fields.data = fields.data === undefined ? value : `${fields.data}\n${value}`;
        else if (name === "event") fields.event = value;
        else if (name === "id" && !value.includes("\0")) fields.id = value;
        else if (name === "retry" && /^\d+$/.test(value)) fields.retry = Number(value);
      }
      if (done) return;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

function fresh(): { id?: string; event?: string; data?: string; retry?: number } {
  return {};
}
