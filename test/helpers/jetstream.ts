/**
 * Raw reads of what JetStream holds, for tests that check what is stored (no plaintext at rest,
 * what a stream queued).
 *
 * @module
 */
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** Every message a stream holds, raw, oldest first. */
export async function rawMessages(nc: NatsConnection, stream: string): Promise<{ subject: string; data: Buffer }[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const out: { subject: string; data: Buffer }[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push({ subject: m.subject, data: Buffer.from(m.data) });
  }
  return out;
}
