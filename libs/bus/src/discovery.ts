/**
 * NATS micro discovery: every bus answers `$SRV.PING|INFO|STATS`, alone, by service name and
 * by instance id, so `nats micro ls` and the status endpoint find every instance. Answers carry
 * the cluster's prefix in their metadata; `discover` keeps only this cluster's instances.
 *
 * @module
 */
import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import { DiscoveryVerb, discoverySubject, InfoResponse } from "@atlas/contracts";
import { createInbox, type Subscription } from "@nats-io/transport-node";
import { decode, encode } from "./codec.ts";
import type { BusCore } from "./core.ts";

/** What the bus remembers of each endpoint it serves, for `$SRV.INFO` and `$SRV.STATS`. */
export interface EndpointRecord {
  name: string;
  subject: string;
  queue?: string;
  metadata: Record<string, string>;
  requests: number;
  errors: number;
  lastError: string;
  processingNs: bigint;
}

/** Subscribes the discovery subjects for this bus; returns the subscriptions. */
export function serveDiscovery(bus: BusCore, endpoints: readonly EndpointRecord[]): Subscription[] {
  const { name, version, description } = bus.service;
  const identity = () => ({ name, id: bus.instance, version, metadata: bus.metadata });
  const endpointInfo = (e: EndpointRecord) => ({
    name: e.name,
    subject: e.subject,
    ...(e.queue === undefined ? {} : { queue_group: e.queue }),
    metadata: e.metadata,
  });
  const answers: Record<DiscoveryVerb, () => unknown> = {
    PING: () => ({ type: "io.nats.micro.v1.ping_response", ...identity() }),
    INFO: () => ({
      type: "io.nats.micro.v1.info_response",
      ...identity(),
      description,
      endpoints: endpoints.map(endpointInfo),
    }),
    STATS: () => ({
      type: "io.nats.micro.v1.stats_response",
      ...identity(),
      started: bus.startedAt.toISOString(),
      endpoints: endpoints.map((e) => ({
        ...endpointInfo(e),
        num_requests: e.requests,
        num_errors: e.errors,
        last_error: e.lastError,
        processing_time: Number(e.processingNs),
        average_processing_time: e.requests === 0 ? 0 : Number(e.processingNs / BigInt(e.requests)),
      })),
    }),
  };
  const subs: Subscription[] = [];
  for (const verb of Object.values(DiscoveryVerb)) {
    for (const subject of [discoverySubject(verb), discoverySubject(verb, name), discoverySubject(verb, name, bus.instance)]) {
      subs.push(
        bus.nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err === null && msg.reply !== undefined) msg.respond(encode(answers[verb]()));
          },
        }),
      );
    }
  }
  return subs;
}

/** Collects `$SRV.INFO` answers of this cluster's instances for `timeoutMs` (default 250 ms). */
export async function discover(bus: BusCore, options: { service?: string; timeoutMs?: number }): Promise<InfoResponse[]> {
  if (bus.nc.isClosed()) return []; // closed (the bus is stopping): nobody to ask
  const inbox = createInbox();
  const found = new Map<string, InfoResponse>();
  const sub = bus.nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err !== null) return;
      try {
        const info = InfoResponse.safeParse(decode(msg.data));
        if (info.success && info.data.metadata?.atlas_prefix === bus.prefix) found.set(info.data.id, info.data);
      } catch {
        // a foreign service answered with something that is not JSON: not ours
      }
    },
  });
  bus.nc.publish(discoverySubject(DiscoveryVerb.info, options.service), new Uint8Array(), { reply: inbox });
  await sleep(options.timeoutMs ?? 250);
  // A busy event loop runs expired timers before it reads the socket: one more turn takes in the
  // answers that arrived within the window but were not read yet (else a loaded api misses them).
  await setImmediate();
  sub.unsubscribe();
  return [...found.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}
