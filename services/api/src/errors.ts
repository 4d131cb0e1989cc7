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
import { API_ERRORS, type ApiErrorCode, type ErrorParams, type ErrorSpec, type ErrorType } from "./error_codes.ts";

export { type ApiErrorCode, ErrorType } from "./error_codes.ts";

/** Options for {@link apiError}: what varies besides the message. */
export interface ApiErrorOptions {
  param?: string | null;
  /** Seconds for `Retry-After`; default the registry's for the code. */
  retryAfterS?: number;
  /** Header `x-atlas-degraded` and friends. */
  headers?: Record<string, string>;
  /** Only `invalid_request`: the HTTP layer's own 4xx status. */
  status?: number;
  cause?: unknown;
}

/** An error that becomes an OpenAI-format response; made by {@link apiError} from the registry. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly status: number;
  readonly type: ErrorType;
  readonly param: string | null;
  readonly code: ApiErrorCode;
  readonly retryAfterS: number | undefined;
  readonly headers: Record<string, string>;

  constructor(code: ApiErrorCode, message: string, options: ApiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const spec: ErrorSpec<never> = API_ERRORS[code];
    this.code = code;
    this.status = options.status ?? spec.status;
    this.type = spec.type;
    this.param = options.param ?? null;
    this.retryAfterS = options.retryAfterS ?? spec.retryAfterS;
    this.headers = options.headers ?? {};
  }

  /** The response body. */
  toBody(): { error: { message: string; type: ErrorType; param: string | null; code: ApiErrorCode } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** The arguments after the code: its message's values (optional when it needs none), then options. */
type ErrorArgs<C extends ApiErrorCode> =
  undefined extends ErrorParams<C>
    ? [params?: ErrorParams<C>, options?: ApiErrorOptions]
    : [params: ErrorParams<C>, options?: ApiErrorOptions];

/** The registered error `code` (`error_codes.ts`), its message made from `params`. */
export function apiError<C extends ApiErrorCode>(code: C, ...[params, options]: ErrorArgs<C>): ApiError {
  const spec = API_ERRORS[code] as ErrorSpec<ErrorParams<C> | undefined>;
  return new ApiError(code, spec.message(params), options);
}

/** A 400 from a zod error on the request body, naming the first failing field. */
export function fromZod(err: ZodError): ApiError {
  const issue = err.issues[0];
  const param = issue === undefined || issue.path.length === 0 ? null : formatPath(issue.path);
  let message = issue?.message ?? "Invalid request";
  if (issue?.code === "unrecognized_keys") message = `Unrecognized request argument supplied: ${issue.keys.join(", ")}`;
  const where = param === null ? "" : ` at '${param}'`;
  return apiError("invalid_value", { message: `Invalid request${where}: ${message}` }, { param, cause: err });
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
      return apiError("invalid_value", { message: err.message }, { param: err.param, cause: err });
    case "not_found":
      return apiError("not_found", { message: err.message }, { cause: err });
    case "conflict":
      return apiError("conflict", { message: err.message }, { cause: err });
    case "overloaded":
      return apiError("overloaded", undefined, { ...retryAfter(err), cause: err });
    case "unavailable":
      // The scheduler's `No live worker serves model "<id>"` (`param: "model"`,
      // services/scheduler/src/service.ts; test/models.test.ts checks the model is named).
      if (err.param === "model") {
        const model = /model "([^"]+)"/.exec(err.message)?.[1];
        return apiError("no_workers", model === undefined ? undefined : { model }, { ...retryAfter(err), param: "model", cause: err });
      }
      return apiError("service_unavailable", undefined, { ...retryAfter(err), cause: err });
    case "timeout":
      return apiError("timeout", undefined, { cause: err });
    default:
      return internalError(requestId, err);
  }
}

/** The bus error's own `Retry-After`, if it has one (else the registry's). */
function retryAfter(err: BusError): { retryAfterS?: number } {
  return err.retryAfterS === undefined ? {} : { retryAfterS: err.retryAfterS };
}

/** A sanitized 500. */
export function internalError(requestId: string, cause?: unknown): ApiError {
  return apiError("internal_error", { requestId }, { cause });
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
      return apiError("invalid_json");
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return apiError("request_too_large");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return apiError("unsupported_media_type");
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return apiError("invalid_content_length");
  }
  if (isNatsUnavailable(err)) return apiError("service_unavailable", undefined, { cause: err });
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    // fastify's own codes (FST_ERR_…) are internal names: the client gets the API's.
    return apiError("invalid_request", { message: fe.message ?? "Bad request" }, { status: fe.statusCode });
  }
  return internalError(requestId, err);
}
