/**
 * Subject naming. Every ATLAS subject starts with one configurable prefix
 * (`ATLAS_NATS_PREFIX`, default `atlas`) so several clusters or test runs share one server.
 *
 * @module
 */
import { z } from "zod";

/** The default subject prefix. */
export const DEFAULT_PREFIX = "atlas";

/** One or more dot-separated NATS tokens, without wildcards. */
export const SubjectPrefix = z
  .string()
  .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "must be dot-separated tokens of letters, digits, '_' or '-'");

/** A single subject token (an id placed inside a subject). */
export const SubjectToken = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9_-]+$/, "must be letters, digits, '_' or '-'");

/** Joins the prefix and tokens into a subject, refusing tokens that would change its shape. */
export function subject(prefix: string, ...tokens: string[]): string {
  for (const t of tokens) {
    if (t === "" || /[\s.*>]/.test(t)) {
      throw new TypeError(`Cannot build a subject with token "${t}": tokens must not be empty or hold '.', '*', '>' or spaces`);
    }
  }
  return [prefix, ...tokens].join(".");
}

/** The names of the five services, as they appear in subjects and discovery. */
export const ServiceName = {
  api: "api",
  scheduler: "scheduler",
  worker: "inference-worker",
  metrics: "metrics",
  persistence: "persistence",
} as const;
/** One of the five service names. */
export type ServiceName = (typeof ServiceName)[keyof typeof ServiceName];

/** Every service name, in start order. */
export const SERVICE_NAMES: readonly ServiceName[] = [
  ServiceName.metrics,
  ServiceName.persistence,
  ServiceName.scheduler,
  ServiceName.worker,
  ServiceName.api,
];
