/**
 * The one mapping from failures to OpenAI's error format at the HTTP edge:
 * `{"error": {"message", "type", "param", "code"}}` with the matching status. A 500 names a
 * request id and never a stack or an internal name.
 *
 * @module
 */
import { BusError, isNatsUnavailable } from "@atlas/bus";
import type { FastifyError } from "fastify";
import { ZodError } from "zod";

/** OpenAI's error types. */
export const ErrorType = {
  invalidRequest: "invalid_request_error",
  authentication: "authentication_error",
  permission: "permission_error",
  notFound: "not_found_error",
  rateLimit: "rate_limit_error",
  server: "server_error",
} as const;
/** One of OpenAI's error types. */
export type ErrorType = (typeof ErrorType)[keyof typeof ErrorType];

/**
 * Every `error.code` the HTTP API answers with, defined once (the table in docs/api.md lists
 * when each is sent).
 */
export const ApiErrorCode = {
  invalidJson: "invalid_json",
  invalidValue: "invalid_value",
  invalidUrl: "invalid_url",
  invalidContentLength: "invalid_content_length",
  invalidRequest: "invalid_request",
  atlasDisabled: "atlas_disabled",
  tooManyMessages: "too_many_messages",
  invalidApiKey: "invalid_api_key",
  adminRequired: "admin_required",
  modelNotFound: "model_not_found",
  unknownUrl: "unknown_url",
  notFound: "not_found",
  sessionNotFound: "session_not_found",
  conflict: "conflict",
  revisionMismatch: "revision_mismatch",
  requestTooLarge: "request_too_large",
  uriTooLong: "uri_too_long",
  unsupportedMediaType: "unsupported_media_type",
  rateLimitExceeded: "rate_limit_exceeded",
  tokensRateLimitExceeded: "tokens_rate_limit_exceeded",
  serverOverloaded: "server_overloaded",
  overloaded: "overloaded",
  serviceUnavailable: "service_unavailable",
  noWorkers: "no_workers",
  memoryUnavailable: "memory_unavailable",
  metricsUnavailable: "metrics_unavailable",
  timeout: "timeout",
  internalError: "internal_error",
} as const;
/** One of the API's error codes. */
export type ApiErrorCode = (typeof ApiErrorCode)[keyof typeof ApiErrorCode];

/** Options for {@link ApiError}. */
export interface ApiErrorOptions {
  type?: ErrorType;
  param?: string | null;
  code?: ApiErrorCode | null;
  /** Seconds for `Retry-After` (429 and 503). */
  retryAfterS?: number;
  /** Header `x-atlas-degraded` and friends. */
  headers?: Record<string, string>;
  cause?: unknown;
}

/** An error that becomes an OpenAI-format response. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly status: number;
  readonly type: ErrorType;
  readonly param: string | null;
  readonly code: ApiErrorCode | null;
  readonly retryAfterS: number | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: ApiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = status;
    this.type = options.type ?? defaultType(status);
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.retryAfterS = options.retryAfterS;
    this.headers = options.headers ?? {};
  }

  /** The response body. */
  toBody(): { error: { message: string; type: ErrorType; param: string | null; code: ApiErrorCode | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function defaultType(status: number): ErrorType {
  if (status === 401) return ErrorType.authentication;
  if (status === 403) return ErrorType.permission;
  if (status === 404) return ErrorType.notFound;
  if (status === 429) return ErrorType.rateLimit;
  if (status >= 500) return ErrorType.server;
  return ErrorType.invalidRequest;
}

/** A 400 from a zod error on the request body, naming the first failing field. */
export function fromZod(err: ZodError): ApiError {
  const issue = err.issues[0];
  const param = issue === undefined || issue.path.length === 0 ? null : formatPath(issue.path);
  let message = issue?.message ?? "Invalid request";
  if (issue?.code === "unrecognized_keys") message = `Unrecognized request argument supplied: ${issue.keys.join(", ")}`;
  const where = param === null ? "" : ` at '${param}'`;
  return new ApiError(400, `Invalid request${where}: ${message}`, { param, code: "invalid_value", cause: err });
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out === "" ? String(p) : `.${String(p)}`;
  return out;
}

/** Maps a bus failure to the HTTP error a client should see. */
export function fromBus(err: BusError, requestId: string): ApiError {
  switch (err.code) {
    case "bad_request":
      return new ApiError(400, err.message, { param: err.param, code: "invalid_value", cause: err });
    case "not_found":
      return new ApiError(404, err.message, { code: "not_found", cause: err });
    case "conflict":
      return new ApiError(409, err.message, { code: "conflict", cause: err });
    case "overloaded":
      return new ApiError(503, "The server is at capacity; retry later.", {
        code: "overloaded",
        retryAfterS: err.retryAfterS ?? 1,
        cause: err,
      });
    case "unavailable":
      return new ApiError(503, "The service is temporarily unavailable; retry later.", {
        code: "service_unavailable",
        retryAfterS: err.retryAfterS ?? 1,
        cause: err,
      });
    case "timeout":
      return new ApiError(504, "The request timed out inside the server; retry later.", { code: "timeout", cause: err });
    default:
      return internalError(requestId, err);
  }
}

/** A sanitized 500. */
export function internalError(requestId: string, cause?: unknown): ApiError {
  return new ApiError(500, `The server had an error while processing your request (request id ${requestId}).`, {
    code: "internal_error",
    cause,
  });
}

/** Maps anything thrown inside a route to an {@link ApiError}. */
export function toApiError(err: unknown, requestId: string): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ZodError) return fromZod(err);
  if (err instanceof BusError) return fromBus(err, requestId);
  const fe = err as Partial<FastifyError>;
  switch (fe.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new ApiError(400, "We could not parse the JSON body of your request. Please send valid JSON.", {
        code: "invalid_json",
      });
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new ApiError(413, "The request body is too large.", { code: "request_too_large" });
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new ApiError(415, "Unsupported Content-Type; send application/json.", { code: "unsupported_media_type" });
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new ApiError(400, "The Content-Length header does not match the body.", { code: "invalid_content_length" });
  }
  if (isNatsUnavailable(err)) {
    return new ApiError(503, "The service is temporarily unavailable; retry later.", {
      code: "service_unavailable",
      retryAfterS: 1,
      cause: err,
    });
  }
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    // fastify's own codes (FST_ERR_…) are internal names: the client gets the API's.
    return new ApiError(fe.statusCode, fe.message ?? "Bad request", { code: ApiErrorCode.invalidRequest });
  }
  return internalError(requestId, err);
}
