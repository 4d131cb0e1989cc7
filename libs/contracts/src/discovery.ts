/**
 * The NATS micro discovery protocol (`$SRV.PING|INFO|STATS[.name[.id]]`), so `nats micro ls`
 * and the status endpoint find every instance. Schemas follow the `io.nats.micro.v1` shapes.
 *
 * Answered by `libs/bus/src/discovery.ts`; asked by `Bus.discover`.
 *
 * @module
 */
import { z } from "zod";

/** The three discovery verbs. */
export const DiscoveryVerb = { ping: "PING", info: "INFO", stats: "STATS" } as const;
/** One of the three discovery verbs. */
export type DiscoveryVerb = (typeof DiscoveryVerb)[keyof typeof DiscoveryVerb];

/** Builds `$SRV.<verb>[.<name>[.<id>]]`. */
export function discoverySubject(verb: DiscoveryVerb, name?: string, id?: string): string {
  return ["$SRV", verb, name, name === undefined ? undefined : id].filter((t) => t !== undefined).join(".");
}

/** Metadata every ATLAS instance puts in its discovery answers. */
export const InstanceMetadata = z.object({
  /** The subject prefix of the cluster this instance belongs to. */
  atlas_prefix: z.string(),
});

const Identity = {
  name: z.string(),
  id: z.string(),
  version: z.string(),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
};

/** `$SRV.PING` answer. */
export const PingResponse = z.object({ type: z.literal("io.nats.micro.v1.ping_response"), ...Identity });
/** `$SRV.PING` answer. */
export type PingResponse = z.infer<typeof PingResponse>;

/** One endpoint as listed by `$SRV.INFO`. */
export const EndpointInfo = z.object({
  name: z.string(),
  subject: z.string(),
  queue_group: z.string().optional(),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
});

/** `$SRV.INFO` answer. */
export const InfoResponse = z.object({
  type: z.literal("io.nats.micro.v1.info_response"),
  ...Identity,
  description: z.string(),
  endpoints: z.array(EndpointInfo),
});
/** `$SRV.INFO` answer. */
export type InfoResponse = z.infer<typeof InfoResponse>;

/** One endpoint's counters as listed by `$SRV.STATS`; times are nanoseconds. */
export const EndpointStats = EndpointInfo.extend({
  num_requests: z.number().int().nonnegative(),
  num_errors: z.number().int().nonnegative(),
  last_error: z.string(),
  processing_time: z.number().nonnegative(),
  average_processing_time: z.number().nonnegative(),
});

/** `$SRV.STATS` answer. */
export const StatsResponse = z.object({
  type: z.literal("io.nats.micro.v1.stats_response"),
  ...Identity,
  started: z.string(),
  endpoints: z.array(EndpointStats),
});
/** `$SRV.STATS` answer. */
export type StatsResponse = z.infer<typeof StatsResponse>;
