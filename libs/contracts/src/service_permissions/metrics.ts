/**
 * The NATS subjects the metrics service may publish and subscribe to (docs/security.md). The
 * generated nats-server configuration (`npm run nats-config`) gives the `metrics` user exactly
 * these.
 *
 * @module
 */
import { ALL_SERVICES, MetricEvents } from "../metrics.ts";
import { MetricsHistory, MetricsPrometheus, MetricsQuery, MetricsSnapshotEvent } from "../metrics_views.ts";
import { busPermissions, mergePermissions, type ServicePermissions } from "../permissions.ts";
import { ServiceName } from "../subjects.ts";

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
