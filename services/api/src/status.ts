/**
 * The cluster's status as the api sees it over NATS: every instance that answers discovery,
 * each one's own health report, the NATS server's version and round-trip time, and one overall
 * `ok | degraded | down`.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import { ATLAS_VERSION, Health, type HealthReport, type HealthState, SchedulerState, SERVICE_NAMES, ServiceName } from "@atlas/contracts";
import type { z } from "zod";

/** One instance as the status endpoint shows it. */
export interface InstanceStatus {
  instance: string;
  version: string;
  state: HealthState;
  healthy: boolean;
  uptime_s: number | null;
  checks: HealthReport["checks"];
  details?: Record<string, unknown>;
  error?: string;
}

/** The body of `GET /v1/atlas/status`. */
export interface ClusterStatus {
  status: HealthState;
  version: string;
  atlas_enabled: boolean;
  nats: { connected: boolean; server_version: string | null; rtt_ms: number | null };
  services: Record<string, InstanceStatus[]>;
  /** Required services with no healthy instance. */
  missing: string[];
  /** The context pool as its leader sees it: leader, standbys, workers and their slots, leases. */
  scheduler: Record<string, unknown> | null;
  checked_at: string;
}

/** Asks every instance of the cluster for its health and folds the answers into one status. */
export async function clusterStatus(bus: Bus, options: { atlasEnabled: boolean; timeoutMs?: number }): Promise<ClusterStatus> {
  const timeoutMs = options.timeoutMs ?? 750;
  const connected = bus.connected;
  const rtt = connected ? await bus.rtt().catch(() => null) : null;
  const found = connected ? await bus.discover({ timeoutMs: Math.min(250, timeoutMs / 3) }) : [];
  const reports = await Promise.all(
    found.map(async (info): Promise<[string, InstanceStatus]> => {
      try {
        const r = await bus.call(Health, {}, { params: { service: info.name, instance: info.id }, timeoutMs });
        return [
          info.name,
          {
            instance: r.instance,
            version: r.version,
            state: r.state,
            healthy: r.state !== "down",
            uptime_s: Math.round(r.uptime_s * 10) / 10,
            checks: r.checks,
            ...(r.details === undefined ? {} : { details: r.details }),
          },
        ];
      } catch (err) {
        return [
          info.name,
          {
            instance: info.id,
            version: info.version,
            state: "down",
            healthy: false,
            uptime_s: null,
            checks: {},
            error: err instanceof Error ? err.message : String(err),
          },
        ];
      }
    }),
  );
  const pool = connected ? await bus.call(SchedulerState, {}, { timeoutMs }).catch(() => null) : null;
  const services: Record<string, InstanceStatus[]> = {};
  for (const name of SERVICE_NAMES) services[name] = [];
  for (const [name, s] of reports) {
    const list = services[name] ?? [];
    list.push(s);
    services[name] = list;
  }

  const missing = SERVICE_NAMES.filter((n) => !(services[n] ?? []).some((s) => s.healthy));
  const anyDegraded = Object.values(services).some((list) => list.some((s) => s.state !== "ok"));
  let status: HealthState = "ok";
  if (!connected || missing.includes(ServiceName.worker) || missing.includes(ServiceName.api)) status = "down";
  else if (missing.length > 0 || anyDegraded) status = "degraded";
  return {
    status,
    version: ATLAS_VERSION,
    atlas_enabled: options.atlasEnabled,
    nats: { connected, server_version: bus.serverVersion ?? null, rtt_ms: rtt === null ? null : Math.round(rtt * 1000) / 1000 },
    services,
    missing,
    scheduler:
      pool === null
        ? null
        : {
            ...pool,
            standbys: (services[ServiceName.scheduler] ?? []).map((s) => s.instance).filter((id) => id !== pool.leader),
            pools: poolsByModel(pool),
          },
    checked_at: new Date().toISOString(),
  };
}

/** The pool of each model: its live workers, their slots, and how many are leased now. */
function poolsByModel(
  pool: z.infer<(typeof SchedulerState)["response"]>,
): Record<string, { workers: string[]; slots: number; leased: number }> {
  const out: Record<string, { workers: string[]; slots: number; leased: number }> = {};
  for (const w of pool.workers) {
    if (!w.alive) continue;
    out[w.model] ??= { workers: [], slots: 0, leased: 0 };
    const p = out[w.model] as { workers: string[]; slots: number; leased: number };
    p.workers.push(w.worker_id);
    p.slots += w.slots.length;
    p.leased += w.slots.filter((s) => s.lease_id !== null).length;
  }
  return out;
}
