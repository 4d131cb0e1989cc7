/**
 * The connection's ups and downs: logs each disconnect, reconnect and error of one NATS
 * connection, and tells listeners when it dropped or came back (`Bus.onConnectionChange`), so a
 * cache kept current by the bus knows that it may have missed messages.
 *
 * @module
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { BusLogger } from "./types.ts";

/** A change of the connection after which messages may have been missed. */
export type ConnectionChange = "disconnect" | "reconnect";

/** Watches one connection's status until it closes. */
export class ConnectionWatch {
  readonly #listeners = new Set<(change: ConnectionChange) => void>();

  constructor(nc: NatsConnection, log: BusLogger) {
    void this.#run(nc, log);
  }

  /** Calls `listener` on every disconnect and reconnect; returns the unsubscribe. */
  on(listener: (change: ConnectionChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async #run(nc: NatsConnection, log: BusLogger): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type !== "disconnect" && s.type !== "reconnect" && s.type !== "error") continue;
      log.warn({ nats: s.type, server: "server" in s ? s.server : undefined }, `NATS ${s.type}`);
      if (s.type === "error") continue;
      for (const l of this.#listeners) l(s.type);
    }
  }
}
