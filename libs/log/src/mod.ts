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
}

/** Paths that must never reach a log. */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "headers.authorization",
  "authorization",
  "apiKey",
  "api_key",
  "password",
  "*.password",
  "*.apiKey",
];

/** Creates the logger of one process. */
export function createLogger(options: LoggerOptions): Logger {
  const format = options.format ?? "auto";
  const pretty = format === "pretty" || (format === "auto" && process.stdout.isTTY === true);
  return pino({
    name: options.service,
    level: options.level ?? "info",
    base: { service: options.service, pid: process.pid, ...options.base },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    ...(pretty
      ? {
          transport: {
            target: "pino-pretty",
            options: { colorize: true, translateTime: "HH:MM:ss.l", ignore: "pid,hostname,service", messageFormat: "[{service}] {msg}" },
          },
        }
      : {}),
  });
}
