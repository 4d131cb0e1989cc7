/**
 * The audit trail: one structured log record (pino, level `info`, message `audit`) for every
 * read, write, import and delete of session memory, every authentication or permission failure,
 * and every rate-limit or admission refusal. A record names who (tenant), what (session), which
 * request (request id) and how it went (outcome) — never message content, never a key.
 *
 * Filter them with `jq 'select(.audit)'`; the fields are listed in docs/security.md.
 *
 * @module
 */
import type { FastifyRequest } from "fastify";

/** What an audit record is about. */
export const AuditEvent = {
  memoryRead: "memory.read",
  memoryList: "memory.list",
  memoryWrite: "memory.write",
  memoryImport: "memory.import",
  memoryDelete: "memory.delete",
  memoryRecall: "memory.recall",
  authDenied: "auth.denied",
  authForbidden: "auth.forbidden",
  rateLimited: "limit.rate",
  admissionRefused: "limit.admission",
} as const;
/** What an audit record is about. */
export type AuditEvent = (typeof AuditEvent)[keyof typeof AuditEvent];

/** One audit record (everything but the request id, which comes from the request). */
export interface AuditRecord {
  event: AuditEvent;
  /** `ok`, `not_found`, `conflict`, `unavailable`, `refused`, `denied`, `invalid`, `error`… */
  outcome: string;
  /** Whose data: the tenant acted on (defaults to the caller's; null when unknown, as on a 401). */
  tenant?: string | null;
  session?: string | null;
  /** Further non-secret facts: a reason, a layer id, counts, a retry delay. */
  detail?: Record<string, string | number | boolean | null>;
}

/** Writes one audit record for `req`. */
export function audit(req: FastifyRequest, record: AuditRecord): void {
  const caller = (req as FastifyRequest & { tenant?: string }).tenant ?? null;
  const tenant = record.tenant === undefined ? caller : record.tenant;
  req.log.info(
    {
      audit: record.event,
      outcome: record.outcome,
      tenant,
      ...(caller !== null && tenant !== null && caller !== tenant ? { actor: caller } : {}),
      session: record.session ?? null,
      request_id: req.id,
      method: req.method,
      route: req.routeOptions?.url ?? null,
      ...record.detail,
    },
    "audit",
  );
}
