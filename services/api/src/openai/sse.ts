/**
 * Server-Sent Events exactly as OpenAI streams them: `data: <json>\n\n` lines, then
 * `data: [DONE]`. A failure after the stream started ends it with an error event, never with a
 * silently dropped connection.
 *
 * @module
 */
import type { FastifyReply } from "fastify";
import type { ApiError } from "../errors.ts";

/** Writes one OpenAI-style event stream on a hijacked reply. */
export class SseStream {
  readonly #reply: FastifyReply;
  #open = true;

  constructor(reply: FastifyReply) {
    this.#reply = reply;
    reply.hijack();
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) headers[k] = String(v);
    reply.raw.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
  }

  /** True until the stream ended or the client went away. */
  get open(): boolean {
    return this.#open && !this.#reply.raw.destroyed;
  }

  /** Sends one JSON event. */
  send(value: unknown): void {
    if (this.open) this.#reply.raw.write(`data: ${JSON.stringify(value)}\n\n`);
  }

  /** Sends `[DONE]` and ends the response. */
  done(): void {
    if (!this.open) return;
    this.#open = false;
    this.#reply.raw.end("data: [DONE]\n\n");
  }

  /** Ends the response without another event (the client went away). */
  abort(): void {
    this.#open = false;
    if (!this.#reply.raw.destroyed) this.#reply.raw.destroy();
  }

  /** Sends an error event in OpenAI's error shape and ends the response. */
  fail(err: ApiError): void {
    if (!this.open) return;
    this.#open = false;
    this.#reply.raw.end(`data: ${JSON.stringify(err.toBody())}\n\n`);
  }
}
