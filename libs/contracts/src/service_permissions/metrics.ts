/**
 * The NATS subjects the metrics service may publish and subscribe to (docs/security.md). The
 * generated nats-server configuration (`npm run nats-config`) gives the `metrics` user exactly
 * these.
 *
 * @module
 */
import {
  ALL_SERVICES,
  busPermissions,
  MetricEvents,
  MetricsHistory,
  MetricsPrometheus,
  MetricsQuery,
  MetricsSnapshotEvent,
  mergePermissions,
  ServiceName,
  type ServicePermissions,
} from "../mod.ts";

/** The metrics service's permissions under `prefix`. */
export function permissions(prefix: string): ServicePermissions {
  return {
    service: ServiceName.metrics,
    ...mergePermissions(busPermissions(prefix, ServiceName.metrics), {
      publish: [MetricsSnapshotEvent.subject(prefix)],
      subscribe: [
        MetricEvents.subject(prefix, { service: ALL_SERVICES }),
        MetricsQuery.subject(prefix),
        MetricsPrometheus.subject(prefix),
        MetricsHistory.subject(prefix),
      ],
    }),
  };
}
