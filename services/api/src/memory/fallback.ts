/**
 * The durable fallback for session memory appends: when persistence does not store an append
 * (`memory.add` unanswered, refused by JetStream, or its breaker open), the api publishes it to
 * the fallback stream (`MemoryAppend`), which persistence drains in order once it is back. The
 * publish is retried until JetStream has stored it (a NATS outage loses core publishes and times
 * out JetStream ones), for up to `retryMs`; `Nats-Msg-Id` makes a retried publish land once.
 * When session memory is encrypted at rest, the layer is sealed to persistence's transit key
 * (`transit.ts`): the stream never holds it in plain text.
 *
 * @module
 */
import type { JetStreamClient } from "@atlas/bus";
import {
  appendMsgId,
  appendSealContext,
  MemoryAppend,
  type MemoryAppendMessage,
  type MemoryLayer,
  type PayloadRef,
} from "@atlas/contracts";
import type { Logger } from "@atlas/log";

const encoder = new TextEncoder();

/** One append to queue. */
export interface FallbackAppend {
  tenant: string;
  sessionId: string;
  model: string | null;
  layer: MemoryLayer;
}

/** What {@link FallbackStream} needs. */
export interface FallbackOptions {
  js: JetStreamClient;
  prefix: string;
  log: Logger;
  /** How long a publish keeps retrying before the append is given up (logged as lost). */
  retryMs: number;
  /** Parks a large layer in the transfer store (a claim check): the message carries its `ref`. */
  pack: (layer: MemoryLayer) => Promise<{ ref?: PayloadRef | undefined }>;
  /** Seals a layer's JSON to persistence's transit key; undefined when it published none (`transit.ts`). */
  seal: (json: Uint8Array, context: string) => Promise<Uint8Array | undefined>;
  /** The client is closing: stop retrying. */
  closed: () => boolean;
}

/** Publishes appends to the fallback stream. */
export class FallbackStream {
  readonly #o: FallbackOptions;

  constructor(options: FallbackOptions) {
    this.#o = options;
  }

  /** Publishes `input`, retried until JetStream stored it; rejects once it gives up. */
  async publish(input: FallbackAppend): Promise<void> {
    const { js, prefix, log } = this.#o;
    const subject = MemoryAppend.subject(prefix, { tenant: input.tenant, session_id: input.sessionId });
    const msgID = appendMsgId(input.tenant, input.sessionId, input.layer.id);
    const deadline = Date.now() + this.#o.retryMs;
    let data: Uint8Array | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        data ??= await this.#message(input);
        await js.publish(subject, data, { msgID, timeout: 5000 });
        if (attempt > 0) log.info({ attempts: attempt + 1, layer: input.layer.id }, "Session memory append stored after retries");
        return;
      } catch (err) {
        if (this.#o.closed() || Date.now() > deadline) {
          log.error({ err, tenant: input.tenant, layer: input.layer.id }, "Session memory append lost: JetStream did not store it");
          throw err;
        }
        if (attempt === 0) log.warn({ err, layer: input.layer.id }, "Session memory append failed; retrying");
        await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** Math.min(attempt, 6))));
      }
    }
  }

  /** The stream message: the layer by reference when large, else sealed when memory is encrypted, else inline. */
  async #message(input: FallbackAppend): Promise<Uint8Array> {
    const scope = { tenant: input.tenant, session_id: input.sessionId, model: input.model };
    const packed = await this.#o.pack(input.layer);
    let message: MemoryAppendMessage;
    if (packed.ref !== undefined) message = { ...scope, ref: packed.ref };
    else {
      const sealed = await this.#o.seal(encoder.encode(JSON.stringify(input.layer)), appendSealContext(input.tenant, input.sessionId));
      message = sealed === undefined ? { ...scope, layer: input.layer } : { ...scope, sealed: Buffer.from(sealed).toString("base64") };
    }
    return encoder.encode(JSON.stringify(message));
  }
}
