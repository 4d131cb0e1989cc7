/**
 * One muxed inbox per bus for every stream it calls, serves or relays: a single wildcard
 * subscription `<inbox>.*`, and a map from the last token to whoever listens there.
 *
 * - A caller's frames arrive at `<inbox>.<token>` (the NATS reply subject of its request).
 * - A handler's cancel subject is `<inbox>.<token>` (named in its first frame).
 * - A relay's forwarded request carries `<inbox>.<token>` as its NATS reply subject, so the
 *   server's no-responders status (503) comes back here; the token is forgotten a few seconds
 *   later ({@link StreamMux.expire}).
 *
 * Liveness probes (requests with `Atlas-Kind: heartbeat`) are answered here: empty while the
 * token's owner says it is alive, `Atlas-Kind: gone` otherwise. The `gone` answer matters:
 * while this subscription exists NATS never reports "no responders" for one of its subjects,
 * so a prober must learn from the answer that the call or handler it asks about is finished.
 *
 * One SUB for the life of the connection replaces a SUB and an UNSUB per stream on both sides.
 *
 * @module
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { Header, makeHeaders, ProbeKind } from "./codec.ts";
import type { BusLogger } from "./types.ts";

/** Whoever listens on one token of the mux. */
export interface MuxEntry {
  /** A frame, a cancel, or the server's no-responders status (503) on this token. */
  onMessage(msg: Msg): void;
  /** A liveness probe arrived: true answers "alive", false answers "gone". */
  onProbe(): boolean;
  /** The mux's subscription failed (e.g. a permissions violation): this entry will hear nothing. */
  onClosed?(err: Error): void;
}

const empty = new Uint8Array();

/** The shared stream inbox of one NATS connection. */
export class StreamMux {
  readonly #nc: NatsConnection;
  readonly #log: BusLogger;
  readonly #base: string;
  readonly #entries = new Map<string, MuxEntry>();
  #sub: Subscription | undefined;
  #next = 0;
  /** Tokens to forget, in the order they expire (all expire after the same delay). */
  #expiring: { subject: string; at: number }[] = [];
  #sweeper: NodeJS.Timeout | undefined;

  constructor(nc: NatsConnection, log: BusLogger) {
    this.#nc = nc;
    this.#log = log;
    this.#base = createInbox();
  }

  /** How many tokens are registered (for tests and status). */
  get size(): number {
    return this.#entries.size;
  }

  /** Registers a listener; returns its subject, `<inbox>.<token>`. Subscribes on first use. */
  register(entry: MuxEntry): string {
    this.#subscribe();
    this.#next += 1;
    const token = this.#next.toString(36);
    this.#entries.set(token, entry);
    return `${this.#base}.${token}`;
  }

  /** Forgets a subject returned by {@link register}; later messages to it are dropped, probes answered `gone`. */
  unregister(subject: string): void {
    this.#entries.delete(subject.slice(this.#base.length + 1));
  }

  /**
   * Forgets `subject` after `ms` (a token that waits only for a possible late status, such as a
   * relay's no-responders 503): one sweep timer for all of them, none per token.
   */
  expire(subject: string, ms: number): void {
    this.#expiring.push({ subject, at: Date.now() + ms });
    this.#sweeper ??= setInterval(() => this.#sweep(), Math.max(50, Math.min(ms, 1000)));
    this.#sweeper.unref?.();
  }

  #sweep(): void {
    const now = Date.now();
    let i = 0;
    while (i < this.#expiring.length && (this.#expiring[i]?.at ?? 0) <= now)
      this.unregister((this.#expiring[i++] as { subject: string }).subject);
    if (i > 0) this.#expiring.splice(0, i);
    if (this.#expiring.length === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #subscribe(): void {
    if (this.#sub !== undefined) return;
    const prefixLength = this.#base.length + 1;
    this.#sub = this.#nc.subscribe(`${this.#base}.*`, {
      callback: (err, msg) => {
        if (err !== null) {
          this.#log.error({ err, subject: this.#base }, "Stream inbox subscription failed");
          const entries = [...this.#entries.values()];
          this.#entries.clear();
          this.#sub = undefined;
          for (const e of entries) e.onClosed?.(err);
          return;
        }
        const entry = this.#entries.get(msg.subject.slice(prefixLength));
        if (msg.reply !== undefined && msg.headers?.get(Header.kind) === ProbeKind.heartbeat) {
          const alive = entry?.onProbe() === true;
          if (!this.#nc.isClosed()) msg.respond(empty, alive ? undefined : { headers: makeHeaders({ [Header.kind]: ProbeKind.gone }) });
          return;
        }
        try {
          entry?.onMessage(msg);
        } catch (e) {
          this.#log.error({ err: e, subject: msg.subject }, "Stream message handler threw");
        }
      },
    });
  }
}

/** Whether a probe's answer (or its failure) says nobody is there any more. */
export function probeSaysGone(answer: Msg | undefined, err?: unknown): boolean {
  if (answer !== undefined) return answer.headers?.get(Header.kind) === ProbeKind.gone;
  const name = err instanceof Error ? `${err.name} ${err.cause instanceof Error ? err.cause.name : ""}` : "";
  return /NoResponders/.test(name) || (err instanceof Error && /no responders/i.test(err.message));
}

/** Sends one liveness probe to `subject`; calls `onGone` when the answer (or no responders) says it is gone. */
export function probe(nc: NatsConnection, subject: string, timeoutMs: number, onGone: () => void): void {
  if (nc.isClosed()) return;
  nc.request(subject, empty, { timeout: timeoutMs, headers: makeHeaders({ [Header.kind]: ProbeKind.heartbeat }) }).then(
    (answer) => {
      if (probeSaysGone(answer)) onGone();
    },
    (err: unknown) => {
      // A timeout is left to the idle timer (a slow or frozen peer); only "nobody there" counts.
      if (probeSaysGone(undefined, err)) onGone();
    },
  );
}
