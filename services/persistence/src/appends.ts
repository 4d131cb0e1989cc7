/**
 * The fallback append stream, drained. The api appends through `memory.add` (one exchange);
 * only when that gets no answer does it publish the append to the durable work-queue stream
 * `<prefix>_memory_append`, which persistence drains here once it is reachable: one append at a
 * time from the durable consumer (`max_ack_pending: 1`, so appends apply in stream order),
 * written into the session log idempotently by layer id, acked only then. An append that can
 * never apply is terminated and counted; one that failed for a passing reason is redelivered.
 *
 * The drain is quiet while the stream is empty: it listens (core NATS) to the stream's subjects,
 * so a fallback publish wakes it and marks its session "queued"; it pulls only then, at start,
 * after a reconnect, and once a minute. A recall or an append of a marked session (or of any
 * session while the stream may hold appends nobody saw published) waits for them first, so
 * turns stay in order and a reply sees its own earlier turns.
 *
 * @module
 */
import {
  type Bus,
  BusError,
  type BusJetStream,
  type ClaimCheck,
  type Consumer,
  isNotFound,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@atlas/bus";
import { MemoryAppend, MemoryAppendMessage, type MemoryNames, sessionKey } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import type { Sealer } from "@atlas/sealed";
import { appendLayer } from "./append_layer.ts";
import type { Sessions } from "./sessions.ts";

/** How often an idle drain checks the stream anyway (appends published while it was away). */
const IDLE_CHECK_MS = 60_000;

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
  bus: Bus;
  js: JetStreamClient;
  jsm: JetStreamManager;
  sessions: Sessions;
  transfer: ClaimCheck;
  /** Opens appends sealed to the transit key. */
  sealer: Sealer;
  names: MemoryNames;
  log: Logger;
  /** Pause before a failed append is redelivered; default 500 ms. */
  retryDelayMs?: number;
}

/** Creates the append stream and its durable consumer when they are missing. */
export async function ensureAppendStream(jetstream: BusJetStream, prefix: string): Promise<void> {
  const stream = MemoryAppend.stream(prefix);
  await jetstream.ensureStream({ ...stream });
  await jetstream.ensureConsumer(stream.name, { ...MemoryAppend.consumer(prefix) });
}

/** Drains the fallback stream into the session log, one append at a time, until stopped. */
export class AppendConsumer {
  readonly stats: AppendStats = { applied: 0, duplicates: 0, dropped: 0, retried: 0, last_error: null, last_applied_at: null };
  readonly #o: AppendConsumerOptions;
  readonly #retryDelayMs: number;
  /** Sessions with a fallback append seen published (and when), maybe not applied yet. */
  readonly #marks = new Map<string, number>();
  /** The stream may hold appends nobody here saw published (at start, after a reconnect). */
  #unknown = true;
  #work = true;
  #stopping = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(options: AppendConsumerOptions) {
    this.#o = options;
    this.#retryDelayMs = options.retryDelayMs ?? 500;
  }

  /** Starts listening and draining. */
  start(): void {
    const { bus } = this.#o;
    bus.watch(MemoryAppend.wildcard(bus.prefix), (msg) => {
      this.#marks.set(msg.subject, Date.now());
      this.#wakeUp();
    });
    bus.onConnectionChange((change) => {
      if (change !== "reconnect") return;
      this.#unknown = true;
      this.#wakeUp();
    });
    this.#loop ??= this.#run();
  }

  /** Stops after the append in hand (an append fetched but not started is handed back at once). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
  }

  /**
   * Waits (at most `ms`) until no fallback append of the session is queued; true when none is.
   * Free unless the session is marked or the stream's content is unknown.
   */
  async settle(tenant: string, sessionId: string, ms: number): Promise<boolean> {
    const { bus, jsm, names } = this.#o;
    const subject = MemoryAppend.subject(bus.prefix, { tenant, session_id: sessionId });
    if (!this.#unknown && !this.#marks.has(subject)) return true;
    const deadline = Date.now() + ms;
    for (;;) {
      const asked = Date.now();
      const queued = await jsm.streams.getMessage(names.stream, { last_by_subj: subject }).catch(() => null);
      if (queued === null) {
        if ((this.#marks.get(subject) ?? 0) < asked) this.#marks.delete(subject);
        return true;
      }
      this.#wakeUp();
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  #wakeUp(): void {
    this.#work = true;
    this.#wake?.();
  }

  async #run(): Promise<void> {
    const { js, jsm, names, bus, log } = this.#o;
    let consumer: Consumer | undefined;
    let first = true;
    while (!this.#stopping) {
      if (!this.#work) await this.#sleep(IDLE_CHECK_MS);
      if (this.#stopping) break;
      const woken = this.#work && !first;
      this.#work = false;
      first = false;
      try {
        // Marks older than the last empty pull are applied (or held by another instance: see info).
        let clearBefore = Date.now();
        if (woken) {
          consumer ??= await js.consumers.get(names.stream, names.consumer);
          for (;;) {
            clearBefore = Date.now();
            const msg = await consumer.next({ expires: 1000 });
            if (msg === null) break;
            if (this.#stopping) {
              msg.nak(); // not started: the next instance takes it at once
              return;
            }
            await this.#handle(msg);
          }
        }
        const info = await jsm.consumers.info(names.stream, names.consumer);
        if (info.num_pending + info.num_ack_pending === 0) {
          this.#unknown = false;
          for (const [subject, at] of this.#marks) if (at < clearBefore) this.#marks.delete(subject);
        } else {
          this.#work = true; // more to drain, or another instance holds the one in flight
          if (info.num_pending === 0) await this.#sleep(100);
        }
      } catch (err) {
        if (this.#stopping) break;
        consumer = undefined;
        this.#work = true;
        this.stats.last_error = err instanceof Error ? err.message : String(err);
        log.warn({ err }, "Append drain failed; retrying");
        if (isNotFound(err)) await ensureAppendStream(bus.jetstream, bus.prefix).catch(() => {});
        await this.#sleep(this.#retryDelayMs);
      }
    }
  }

  async #handle(msg: JsMsg): Promise<void> {
    const { sessions, transfer, sealer, log, bus } = this.#o;
    let body: unknown;
    try {
      body = msg.json();
    } catch {
      return this.#drop(msg, "Append is not JSON");
    }
    const parsed = MemoryAppendMessage.safeParse(body);
    if (!parsed.success) return this.#drop(msg, `Append is invalid: ${parsed.error.issues[0]?.message}`);
    const append = parsed.data;
    if (msg.subject !== MemoryAppend.subject(bus.prefix, append)) {
      return this.#drop(msg, `Append for "${sessionKey(append.tenant, append.session_id)}" arrived on "${msg.subject}"`);
    }
    try {
      const layer = await appendLayer(append, { transfer, sealer });
      const r = await sessions.add(append.tenant, append.session_id, append.model, layer);
      if (r.duplicate) this.stats.duplicates += 1;
      else this.stats.applied += 1;
      this.stats.last_applied_at = new Date().toISOString();
      await msg.ackAck({ timeout: 5000 }).catch(() => msg.ack());
      if (append.ref !== undefined) await transfer.drop(append.ref);
    } catch (err) {
      if (err instanceof BusError && !err.retryable) return this.#drop(msg, err.message, err);
      this.stats.retried += 1;
      this.stats.last_error = err instanceof Error ? err.message : String(err);
      log.warn({ err, tenant: append.tenant }, "Append failed; it will be redelivered");
      msg.nak(this.#retryDelayMs);
    }
  }

  #drop(msg: JsMsg, reason: string, err?: unknown): void {
    const { jsm, names, log } = this.#o;
    this.stats.dropped += 1;
    this.stats.last_error = reason;
    log.error({ err, subject: msg.subject, seq: msg.seq }, `Dropped an append that can never apply: ${reason}`);
    msg.term(reason.slice(0, 200));
    // A work queue removes a message on its ack only: a terminated one would stay for good, and
    // make `settle` wait for its session after every restart. The log line above keeps the record.
    jsm.streams.deleteMessage(names.stream, msg.seq, false).catch((e: unknown) => {
      log.warn({ err: e, seq: msg.seq }, "Cannot delete a dropped append from the fallback stream");
    });
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
