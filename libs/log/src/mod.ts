/**
 * `@atlas/log`: pino loggers, pretty on a terminal and JSON otherwise, with secrets redacted.
 *
 * @module
 */
import pino, { type Logger } from "pino";

export type { Logger } from "pino";

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** The service (or tool) name, on every line. */
  service: string;
  level?: string;
  /** `auto` (default): pretty when stdout is a terminal, JSON otherwise. */
  format?: "auto" | "pretty" | "json";
  /** Extra fields on every line (instance id, worker id). */
  base?: Record<string, unknown>;
  /** Where JSON lines go instead of stdout (tests capture logs this way); implies JSON. */
  destination?: { write(line: string): void };
}

/** Paths that must never reach a log: API keys, bearer tokens, passwords (see docs/security.md). */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  'req.headers["x-api-key"]',
  "headers.authorization",
  "headers.cookie",
  'headers["x-api-key"]',
  "*.headers.authorization",
  "authorization",
  "*.authorization",
  "apiKey",
  "api_key",
  "access_token",
  "*.access_token",
  "req.query.access_token",
  "query.access_token",
  "password",
  "*.password",
  "pass",
  "*.pass",
  "*.apiKey",
  "NATS_PASSWORD",
  "*.NATS_PASSWORD",
  "ATLAS_API_KEYS",
  "*.ATLAS_API_KEYS",
];

/** Query parameters whose values are secrets (a bearer token in a URL, for EventSource clients). */
const SECRET_QUERY = /([?&](?:access_token|api_key|key)=)[^&#]*/gi;

/** A URL with the values of secret query parameters replaced, for logs. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, "$1[redacted]");
}

/** How a request is logged when a log line carries `req`: never its headers, secrets cut out of its URL. */
function serializeRequest(req: unknown): unknown {
  if (req === null || typeof req !== "object") return req;
  const r = req as { method?: unknown; url?: unknown; id?: unknown; ip?: unknown; socket?: { remoteAddress?: unknown } };
  return {
    ...(r.id === undefined ? {} : { id: r.id }),
    method: r.method,
    url: typeof r.url === "string" ? redactUrl(r.url) : r.url,
    remoteAddress: r.ip ?? r.socket?.remoteAddress,
  };
}

/** Creates the logger of one process. */
export function createLogger(options: LoggerOptions): Logger {
  const format = options.format ?? "auto";
  const pretty = options.destination === undefined && (format === "pretty" || (format === "auto" && process.stdout.isTTY === true));
  const destination = options.destination as pino.DestinationStream | undefined;
  return pino(
    {
      name: options.service,
      level: options.level ?? "info",
      base: { service: options.service, pid: process.pid, ...options.base },
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      serializers: { err: pino.stdSerializers.err, req: serializeRequest },
      ...(pretty
        ? {
            transport: {
              target: "pino-pretty",
              options: { colorize: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname,service", messageFormat: "[{service}] {msg}" },
            },
          }
        : {}),
    },
    ...(destination === undefined ? [] : [destination]),
  );
}
