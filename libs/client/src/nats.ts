/**
 * `@atlas/client/nats`: the metrics snapshots straight from NATS (`<prefix>.metrics.snapshot`,
 * the `MetricsSnapshotEvent` contract), for a program inside the cluster's network with NATS
 * credentials that may subscribe to it. A separate entry point, so that the HTTP client never
 * loads the NATS client.
 *
 * Plain NATS has no replay: a snapshot published while the connection is down is not delivered
 * (the client reconnects by itself). `seq` grows by one per snapshot within one metrics
 * `instance`, so a gap is visible; for replay and `Last-Event-ID` resume, use
 * `client.metrics.subscribe()` (SSE through the api).
 *
 * @module
 */
import { MetricsSnapshot, MetricsSnapshotEvent } from "@atlas/contracts";
import { connect, type NatsConnection } from "@nats-io/transport-node";

/** Where and as whom to subscribe. */
export interface NatsMetricsOptions {
  /** NATS URL(s), `nats://127.0.0.1:4222`; ignored with `connection`. */
  servers?: string | string[] | undefined;
  /** The cluster's subject prefix (`ATLAS_NATS_PREFIX`, default `atlas`). */
  prefix?: string | undefined;
  /** NATS user and password, if the server wants them. */
  user?: string | undefined;
  pass?: string | undefined;
  /** A connection of your own (left open when the subscription ends). */
  connection?: NatsConnection | undefined;
  /** Ends the subscription. */
  signal?: AbortSignal | undefined;
  /** Told of a message that is not a snapshot (it is skipped). */
  onInvalid?: ((error: Error) => void) | undefined;
}

/** Every snapshot the metrics service publishes from now on, validated, until `signal` aborts or the loop breaks. */
export async function* subscribeMetricsOverNats(options: NatsMetricsOptions = {}): AsyncGenerator<MetricsSnapshot> {
  const { signal } = options;
  if (signal?.aborted) return;
  const nc =
    options.connection ??
    (await connect({
      servers: options.servers ?? "nats://127.0.0.1:4222",
      ...(options.user === undefined ? {} : { user: options.user }),
      ...(options.pass === undefined ? {} : { pass: options.pass }),
    }));
  const sub = nc.subscribe(MetricsSnapshotEvent.subject(options.prefix ?? "atlas"));
  const stop = () => sub.unsubscribe();
  signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const m of sub) {
      if (signal?.aborted) return; // messages already buffered when it aborted are not delivered
      let parsed: ReturnType<typeof MetricsSnapshot.safeParse>;
      try {
        parsed = MetricsSnapshot.safeParse(m.json());
      } catch (err) {
        options.onInvalid?.(err instanceof Error ? err : new Error(String(err)));
        continue;
      }
      if (parsed.success) yield parsed.data;
      else options.onInvalid?.(parsed.error);
    }
  } finally {
    signal?.removeEventListener("abort", stop);
    sub.unsubscribe();
    if (options.connection === undefined) await nc.close();
  }
}
