/**
 * The consumer of the append stream: takes one append at a time from the durable consumer
 * (`max_ack_pending: 1`, so appends apply in stream order), applies it to the session document
 * idempotently by layer id, and acks it only then. An append that can never apply (invalid, or
 * its session document is corrupt) is terminated and counted; one that failed for a passing
 * reason (KV timeout, NATS reconnecting) is redelivered after a pause, before any later append.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import { MemoryAppend, MemoryAppendMessage, MemoryLayer, type MemoryNames, sessionToken } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import type { Consumer, JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { SessionStore } from "./store.ts";
import type { Transfer } from "./transfer.ts";

/** Counters the health report shows. */
export interface AppendStats {
  applied: number;
  duplicates: number;
  /** Appends terminated because they can never apply. */
  dropped: number;
  /** Deliveries that failed for a passing reason and were handed back. */
  retried: number;
  last_error: string | null;
  last_applied_at: string | null;
}

/** Options for {@link AppendConsumer}. */
export interface AppendConsumerOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: SessionStore;
  transfer: Transfer;
  names: MemoryNames;
  prefix: string;
  log: Logger;
  /** Pause before a failed append is redelivered; default 500 ms. */
  retryDelayMs?: number;
}

/** Creates the append stream and its durable consumer when they are missing. */
export async function ensureAppendStream(jsm: JetStreamManager, prefix: string): Promise<void> {
  const stream = MemoryAppend.stream(prefix);
  try {
    await jsm.streams.info(stream.name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add({ ...stream });
  }
  const consumer = MemoryAppend.consumer(prefix);
  try {
    await jsm.consumers.info(stream.name, consumer.durable_name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.consumers.add(stream.name, { ...consumer });
  }
}

/** Whether a JetStream API error says the stream or consumer does not exist. */
export function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown };
  return (
    e?.code === 10059 ||
    e?.code === 10014 ||
    e?.name === "StreamNotFoundError" ||
    e?.name === "ConsumerNotFoundError" ||
    (typeof e?.message === "string" && /not found/i.test(e.message))
  );
}

/** Applies appends from the stream, one at a time, until stopped. */
export class AppendConsumer {
  readonly stats: AppendStats = { applied: 0, duplicates: 0, dropped: 0, retried: 0, last_error: null, last_applied_at: null };
  readonly #o: AppendConsumerOptions;
  readonly #retryDelayMs: number;
  #stopping = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(options: AppendConsumerOptions) {
    this.#o = options;
    this.#retryDelayMs = options.retryDelayMs ?? 500;
  }

  /** Starts the loop. */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops after the append in hand (an append fetched but not started is handed back at once). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { js, jsm, names, prefix, log } = this.#o;
    let consumer: Consumer | undefined;
    while (!this.#stopping) {
      try {
        consumer ??= await js.consumers.get(names.stream, names.consumer);
        const msg = await consumer.next({ expires: 1000 });
        if (msg === null) continue;
        if (this.#stopping) {
          msg.nak(); // not started: the next instance takes it at once
          break;
        }
        await this.#handle(msg);
      } catch (err) {
        if (this.#stopping) break;
        consumer = undefined;
        this.stats.last_error = err instanceof Error ? err.message : String(err);
        log.warn({ err }, "Append consumer failed; retrying");
        if (isNotFound(err)) await ensureAppendStream(jsm, prefix).catch(() => {});
        await this.#sleep(this.#retryDelayMs);
      }
    }
  }

  async #handle(msg: JsMsg): Promise<void> {
    const { store, transfer, log, prefix } = this.#o;
    let body: unknown;
    try {
      body = msg.json();
    } catch {
      return this.#drop(msg, "Append is not JSON");
    }
    const parsed = MemoryAppendMessage.safeParse(body);
    if (!parsed.success) return this.#drop(msg, `Append is invalid: ${parsed.error.issues[0]?.message}`);
    const append = parsed.data;
    if (msg.subject !== MemoryAppend.subject(prefix, append)) {
      return this.#drop(msg, `Append for "${append.tenant}/${append.session_id}" arrived on "${msg.subject}"`);
    }
    try {
      let layer = append.layer;
      if (layer === undefined && append.ref !== undefined) {
        const r = MemoryLayer.safeParse(await transfer.read(append.ref));
        if (!r.success) return this.#drop(msg, `Append's layer is invalid: ${r.error.issues[0]?.message}`);
        layer = r.data;
      }
      if (layer === undefined) return this.#drop(msg, "Append has no layer");
      const added = await store.appendLayer({ tenant: append.tenant, sessionId: append.session_id, model: append.model, layer });
      if (added) this.stats.applied += 1;
      else this.stats.duplicates += 1;
      this.stats.last_applied_at = new Date().toISOString();
      await msg.ackAck({ timeout: 5000 }).catch(() => msg.ack());
      if (append.ref !== undefined) await transfer.drop(append.ref);
    } catch (err) {
      if (err instanceof BusError && !err.retryable) return this.#drop(msg, err.message, err);
      this.stats.retried += 1;
      this.stats.last_error = err instanceof Error ? err.message : String(err);
      log.warn({ err, session: sessionToken(append.session_id), tenant: append.tenant }, "Append failed; it will be redelivered");
      msg.nak(this.#retryDelayMs);
    }
  }

  #drop(msg: JsMsg, reason: string, err?: unknown): void {
    this.stats.dropped += 1;
    this.stats.last_error = reason;
    this.#o.log.error({ err, subject: msg.subject, seq: msg.seq }, `Dropped an append that can never apply: ${reason}`);
    msg.term(reason.slice(0, 200));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
