/**
 * Health of one service instance, asked by the api's status endpoint and by the supervisor.
 *
 * Sender: `services/api/src/status.ts`. Handler: every service, through `Bus.serveHealth`
 * in `libs/bus/src/bus.ts`.
 *
 * @module
 */
import { z } from "zod";
import { defineRpc } from "./define.ts";
import { SubjectToken, subject } from "./subjects.ts";

/** Overall state of an instance or of the cluster. */
export const HealthState = z.enum(["ok", "degraded", "down"]);
/** Overall state of an instance or of the cluster. */
export type HealthState = z.infer<typeof HealthState>;

/** One named check inside a health report. */
export const HealthCheck = z.object({
  ok: z.boolean(),
  detail: z.string().optional(),
});
/** One named check inside a health report. */
export type HealthCheck = z.infer<typeof HealthCheck>;

/** What an instance says of itself. */
export const HealthReport = z.object({
  service: z.string(),
  instance: z.string(),
  version: z.string(),
  state: HealthState,
  started_at: z.iso.datetime(),
  uptime_s: z.number().nonnegative(),
  checks: z.record(z.string(), HealthCheck),
  /** Service-specific details (a worker's model and slots, the supervisor's children). */
  details: z.record(z.string(), z.unknown()).optional(),
});
/** What an instance says of itself. */
export type HealthReport = z.infer<typeof HealthReport>;

/** Asks one instance for its health: `<prefix>.health.<service>.<instance>`. */
export const Health = defineRpc({
  name: "health",
  subject: (prefix, p: { service: string; instance: string }) =>
    subject(prefix, "health", SubjectToken.parse(p.service), SubjectToken.parse(p.instance)),
  request: z.object({}).strict(),
  response: HealthReport,
});
