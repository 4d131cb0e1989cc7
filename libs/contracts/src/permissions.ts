/**
 * NATS permissions as values. Each service declares, next to its code
 * (`services/<name>/src/permissions.ts`), the subjects it publishes and subscribes; the
 * generator (`npm run nats-config`, `libs/supervisor/src/nats_config.ts`) turns the declarations
 * into a nats-server configuration with one user per service, and the integration tests run
 * every service under it — a service that steps outside its list is refused by the server, as a
 * Deno program without `--allow-net`.
 *
 * The helpers here build the subject patterns every declaration needs: the bus's own traffic
 * (inboxes, `$SRV` discovery, health, metric events) and JetStream resources (the `$JS.API`
 * subjects of one stream, a KV bucket, an object store — or, for a user that must not manage a
 * bucket, reads and writes of named keys only). Concrete subjects come from the
 * contracts themselves ({@link anyToken} fills a parameter with `*`), so a declaration cannot
 * drift from the subject it allows.
 *
 * @module
 */

/** What one NATS user may publish and subscribe to. */
export interface SubjectPermissions {
  publish: string[];
  subscribe: string[];
}

/** The declaration of one service, for one subject prefix. */
export interface ServicePermissions extends SubjectPermissions {
  /** The service (and NATS user) name. */
  service: string;
}

/**
 * A placeholder subject token: build a contract's subject with it, then {@link wildcard} turns
 * it into `*` (a parameter such as a worker id that is only known at run time).
 */
export const anyToken = "__any__";

/** Replaces every {@link anyToken} token of `subject` with `*`. */
export function wildcard(subject: string): string {
  return subject
    .split(".")
    .map((t) => (t === anyToken ? "*" : t))
    .join(".");
}

/** Merges declarations, keeping the first occurrence of each subject (in order). */
export function mergePermissions(...parts: Partial<SubjectPermissions>[]): SubjectPermissions {
  const publish = new Set<string>();
  const subscribe = new Set<string>();
  for (const p of parts) {
    for (const s of p.publish ?? []) publish.add(s);
    for (const s of p.subscribe ?? []) subscribe.add(s);
  }
  return { publish: [...publish], subscribe: [...subscribe] };
}

/**
 * What every service's bus needs: request replies and stream messages in `_INBOX.>` (both
 * ways: a stream handler publishes into its caller's inbox, a caller cancels and probes into its
 * handler's), `$SRV` discovery of its own name, its own health subject, its own metric events,
 * and the container health check's `$SRV.PING.<name>` (it connects as the service's user).
 */
export function busPermissions(prefix: string, service: string): SubjectPermissions {
  return {
    publish: ["_INBOX.>", `$SRV.PING.${service}`, `${prefix}.metrics.events.${service}`],
    subscribe: [
      "_INBOX.>",
      "$SRV.PING",
      "$SRV.INFO",
      "$SRV.STATS",
      `$SRV.*.${service}`,
      `$SRV.*.${service}.*`,
      `${prefix}.health.${service}.*`,
    ],
  };
}

/** The JetStream API subjects any JetStream user needs (account info, finding streams). */
export function jetStreamBase(): SubjectPermissions {
  return { publish: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"], subscribe: [] };
}

/**
 * The JetStream API subjects of one stream: manage it (info, create, update, purge, message get
 * and delete), its consumers (create, info, next message, ack, flow control) and direct gets.
 */
export function streamPermissions(stream: string): SubjectPermissions {
  return mergePermissions(jetStreamBase(), {
    publish: [
      `$JS.API.STREAM.*.${stream}`,
      `$JS.API.STREAM.MSG.*.${stream}`,
      `$JS.API.CONSUMER.*.${stream}`,
      `$JS.API.CONSUMER.*.${stream}.>`,
      `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.>`,
      `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`,
      `$JS.API.DIRECT.GET.${stream}`,
      `$JS.API.DIRECT.GET.${stream}.>`,
      `$JS.ACK.${stream}.>`,
      `$JS.FC.${stream}.>`,
    ],
  });
}

/**
 * Reading one stream without managing it: its info and single messages (`STREAM.MSG.GET`, by
 * sequence or last per subject, and direct gets). No create, update, purge or delete of the
 * stream or of a message, no consumers (so no listing or watching a KV bucket).
 */
export function streamReadPermissions(stream: string): SubjectPermissions {
  return mergePermissions(jetStreamBase(), {
    publish: [
      `$JS.API.STREAM.INFO.${stream}`,
      `$JS.API.STREAM.MSG.GET.${stream}`,
      `$JS.API.DIRECT.GET.${stream}`,
      `$JS.API.DIRECT.GET.${stream}.>`,
    ],
  });
}

/**
 * A KV bucket for a user that must not manage it: reads of any key ({@link streamReadPermissions}
 * of `KV_<bucket>`) and writes — put, create, update, delete marker — of `keys` only. With
 * `create`, also `STREAM.CREATE` of the bucket's stream, which makes it when it is missing and
 * cannot change one that exists.
 */
export function kvKeysPermissions(bucket: string, keys: readonly string[], options: { create?: boolean } = {}): SubjectPermissions {
  return mergePermissions(streamReadPermissions(`KV_${bucket}`), {
    publish: [...(options.create === true ? [`$JS.API.STREAM.CREATE.KV_${bucket}`] : []), ...keys.map((k) => `$KV.${bucket}.${k}`)],
  });
}

/**
 * The stream settings a KV bucket needs when some of its writers have only
 * {@link kvKeysPermissions}: without them, a put on a key the user may write with the header
 * `Nats-Rollup: all` purges every other key of the bucket (JetStream's rollup), and no subject
 * permission can forbid a header. With them a rollup, a purge and a message delete are refused;
 * puts, creates, updates and delete markers still work (`kv.purge(key)` does not). JetStream
 * (2.9) accepts them as an update of an existing stream too.
 */
export const KEY_WRITER_STREAM_LOCKS = { allow_rollup_hdrs: false, deny_purge: true, deny_delete: true } as const;

/** A JetStream KV bucket: its stream `KV_<bucket>` and its keys `$KV.<bucket>.>`. */
export function kvPermissions(bucket: string): SubjectPermissions {
  return mergePermissions(streamPermissions(`KV_${bucket}`), { publish: [`$KV.${bucket}.>`] });
}

/** A JetStream object store: its stream `OBJ_<bucket>` and its chunks and metadata `$O.<bucket>.>`. */
export function objectStorePermissions(bucket: string): SubjectPermissions {
  return mergePermissions(streamPermissions(`OBJ_${bucket}`), { publish: [`$O.${bucket}.>`] });
}
