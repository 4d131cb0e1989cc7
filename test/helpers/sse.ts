/**
 * A small Server-Sent Events client over `fetch` for tests: connect with headers (so
 * `Last-Event-ID` can be set by hand), read events one by one, disconnect.
 *
 * @module
 */

/** One event as the wire carried it. */
export interface SseEvent {
  id: string | undefined;
  event: string;
  data: string;
}

/** An open event stream. */
export interface SseClient {
  readonly status: number;
  /** The next event (comments and heartbeats skipped); rejects after `timeoutMs`. */
  next(timeoutMs?: number): Promise<SseEvent>;
  close(): void;
}

/** Opens `url` as an event stream; resolves once the response headers are in. */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const ac = new AbortController();
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: ac.signal });
  const reader = res.body?.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const queue: SseEvent[] = [];
  // A read that outlived a timed-out next() is kept, so no chunk is lost.
  let pending: ReturnType<NonNullable<typeof reader>["read"]> | undefined;

  const parse = () => {
    for (let end = buffer.indexOf("\n\n"); end !== -1; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id: string | undefined;
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") id = value;
        else if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length > 0) queue.push({ id, event, data: data.join("\n") });
    }
  };

  return {
    status: res.status,
    async next(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0) {
        if (reader === undefined) throw new Error("The response has no body");
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`No event within ${timeoutMs} ms`);
        let timer: NodeJS.Timeout | undefined;
        pending ??= reader.read();
        const r = await Promise.race([
          pending,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`No event within ${timeoutMs} ms`)), left);
          }),
        ]).finally(() => clearTimeout(timer));
        pending = undefined;
        if (r.done) throw new Error("The stream ended");
        buffer += r.value;
        parse();
      }
      return queue.shift() as SseEvent;
    },
    close() {
      ac.abort();
    },
  };
}

/** The `data:` payloads of an OpenAI-style event stream (a fetch response), read one by one. */
export interface DataStream {
  /** The next payload; rejects after `timeoutMs` or when the stream ended first. */
  next(timeoutMs?: number): Promise<string>;
  /** Every payload until the stream ends; rejects when it does not end within `timeoutMs`. */
  rest(timeoutMs?: number): Promise<string[]>;
}

/** Reads the `data:` payloads of a streamed completion. */
export function readSse(res: Response): DataStream {
  const reader = res.body?.pipeThrough(new TextDecoderStream()).getReader();
  if (reader === undefined) throw new Error("The response has no body");
  let buffer = "";
  let ended = false;
  const queue: string[] = [];
  let pending: ReturnType<typeof reader.read> | undefined;
  const fill = async (deadline: number): Promise<boolean> => {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error("The stream did not go on in time");
    let timer: NodeJS.Timeout | undefined;
    pending ??= reader.read();
    const r = await Promise.race([
      pending,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("The stream did not go on in time")), left);
      }),
    ]).finally(() => clearTimeout(timer));
    pending = undefined;
    if (r.done) {
      ended = true;
      return false;
    }
    buffer += r.value;
    for (let end = buffer.indexOf("\n\n"); end !== -1; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) if (line.startsWith("data: ")) queue.push(line.slice(6));
    }
    return true;
  };
  return {
    async next(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0) {
        if (ended || !(await fill(deadline))) throw new Error("The stream ended");
      }
      return queue.shift() as string;
    },
    async rest(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (!ended && (await fill(deadline))) {}
      return queue.splice(0);
    },
  };
}
