/**
 * Counts every message on a stack's NATS server: a plain connection (the bench's `nats-server`
 * has no users) subscribed to `>`, which sees every subject of the account — service requests
 * and replies (`_INBOX.…`), events, JetStream API calls (`$JS.API.…`), KV and object-store
 * writes (`$KV.…`, `$O.…`), acks and deliveries. Counts are kept per raw subject in windows
 * the caller opens and closes, and summed per {@link normalizeSubject normalized} subject.
 *
 * @module
 */
import { connect, type NatsConnection, type Subscription } from "@nats-io/transport-node";

/** Messages and payload bytes seen per raw subject during one window. */
export interface Window {
  /** Length, ms. */
  ms: number;
  /**
   * By raw subject; a message to a reply subject seen earlier on a request is keyed
   * `<reply subject>\u0000<request subject>`, so replies can be told apart by what they answer.
   */
  counts: Map<string, { messages: number; bytes: number }>;
}

/** A counter subscribed to `>` on one server. */
export interface SubjectCounter {
  /** Starts a new window (the previous one, if open, is dropped). */
  open(): void;
  /** Closes the window after making sure the server delivered everything sent before this call. */
  close(): Promise<Window>;
  stop(): Promise<void>;
}

/** Connects and subscribes to `>`. */
export async function countSubjects(natsUrl: string): Promise<SubjectCounter> {
  const nc: NatsConnection = await connect({ servers: natsUrl, name: "bench-message-counter", noEcho: true });
  let counts = new Map<string, { messages: number; bytes: number }>();
  /** Reply subject → the subject of the request that named it. */
  let answers = new Map<string, string>();
  let openedAt = performance.now();
  let recording = false;
  const sub: Subscription = nc.subscribe(">", {
    callback: (_err, msg) => {
      if (!recording) return;
      if (msg.reply !== undefined && msg.reply !== "") answers.set(msg.reply, msg.subject);
      const request = answers.get(msg.subject);
      const key = request === undefined ? msg.subject : `${msg.subject}\u0000${request}`;
      const c = counts.get(key);
      const bytes = msg.data.length;
      if (c === undefined) counts.set(key, { messages: 1, bytes });
      else {
        c.messages += 1;
        c.bytes += bytes;
      }
    },
  });
  await nc.flush();
  return {
    open() {
      counts = new Map();
      answers = new Map();
      openedAt = performance.now();
      recording = true;
    },
    async close() {
      const ms = performance.now() - openedAt;
      // A round trip: everything the server routed to this subscription before it is in.
      await nc.flush();
      recording = false;
      return { ms, counts };
    },
    async stop() {
      sub.unsubscribe();
      await nc.close();
    },
  };
}

const NUID = /^[A-Za-z0-9]{22}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A subject with its per-request and per-instance parts replaced by placeholders, so that one
 * row stands for one kind of message: the stack's prefix → `<p>`, inbox suffixes → `*`, JetStream
 * ack tokens → `<ack>`, and in any other token: numbers → `<n>`, worker ids → `<worker>`, bench
 * session ids → `<session>`, NUIDs, UUIDs and other long ids → `<id>`.
 */
export function normalizeSubject(subject: string, prefix: string): string {
  const tokens = subject.split(".");
  const out: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const raw = tokens[i]!;
    const t = prefix === "" ? raw : raw.replaceAll(prefix, "<p>");
    if (/INBOX/i.test(t)) {
      out.push(t, "*");
      break;
    }
    if (t === "ACK" && out[0] === "$JS" && i === 1) {
      // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
      out.push(t, tokens[2] === undefined ? "" : tokens[2].replaceAll(prefix, "<p>"), tokens[3] ?? "", "<ack>");
      break;
    }
    out.push(placeholder(t));
  }
  return out.join(".");
}

function placeholder(t: string): string {
  if (/^\d+$/.test(t)) return "<n>";
  if (/^worker-\d+$/.test(t)) return "<worker>";
  if (/^bench-/.test(t) || (/^[A-Za-z0-9_-]{4,}$/.test(t) && Buffer.from(t, "base64url").toString("latin1").startsWith("bench-"))) {
    return "<session>"; // a bench session id, plain or base64url-encoded
  }
  if (UUID.test(t) || NUID.test(t)) return "<id>";
  if (t.length >= 16 && /^[A-Za-z0-9_=-]+$/.test(t) && /\d/.test(t)) return "<id>";
  return t;
}

/** A window's counts summed per normalized subject; replies read `_INBOX.* ← <request subject>`. */
export function normalized(w: Window, prefix: string): Map<string, { messages: number; bytes: number }> {
  const out = new Map<string, { messages: number; bytes: number }>();
  for (const [key, c] of w.counts) {
    const [subject = "", request] = key.split("\u0000");
    const k =
      request === undefined
        ? normalizeSubject(subject, prefix)
        : `${normalizeSubject(subject, prefix)} ← ${normalizeSubject(request, prefix)}`;
    const e = out.get(k);
    if (e === undefined) out.set(k, { ...c });
    else {
      e.messages += c.messages;
      e.bytes += c.bytes;
    }
  }
  return out;
}
