/**
 * The API's error registry, as fastify keeps its own in `lib/errors`: every `error.code` the
 * HTTP API answers with, once, with its HTTP status, OpenAI error type, message template and
 * when it is sent. Errors are made from it (`apiError` in `errors.ts`: a code that is not here
 * does not compile), and the error table of docs/api.md is printed from it
 * (`services/api/src/error_docs.ts`; `errors.test.ts` keeps the two equal).
 *
 * @module
 */

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

/** One registered error: what a client gets, and when. */
export interface ErrorSpec<P> {
  readonly status: number;
  readonly type: ErrorType;
  /** The message, from the values that vary. */
  readonly message: (p: P) => string;
  /** When it is sent (docs/api.md). */
  readonly when: string;
  /** `Retry-After` (s) unless the call says otherwise: the error is worth retrying. */
  readonly retryAfterS?: number;
  /** The statuses it is sent with, when not only `status` (docs/api.md). */
  readonly statuses?: string;
}

const spec = <P = undefined>(s: ErrorSpec<P>): ErrorSpec<P> => s;
const { invalidRequest, authentication, permission, notFound, rateLimit, server } = ErrorType;

/** A rate limit's message: who hit which limit, and when to come back. */
type RateLimited = { who: string; limit: number; what: string; retryAfterS: number };
const rateLimited = ({ who, limit, what, retryAfterS }: RateLimited) =>
  `Rate limit reached for ${who}: ${limit} ${what} per minute. Please try again in ${retryAfterS}s.`;

/** Every error the HTTP API answers with, by code, in the order docs/api.md lists them. */
export const API_ERRORS = {
  invalid_json: spec<{ notObject?: boolean } | undefined>({
    status: 400,
    type: invalidRequest,
    message: (p) =>
      p?.notObject === true
        ? "The request body must be a JSON object."
        : "We could not parse the JSON body of your request. Please send valid JSON.",
    when: "the body is not JSON, or not a JSON object (never a 500)",
  }),
  invalid_value: spec<{ message: string }>({
    status: 400,
    type: invalidRequest,
    message: (p) => p.message,
    when: 'a field fails validation, `param` names it (`messages[0].role`); the prompt does not fit the context ("This model\'s maximum context length is 4096 tokens, but the prompt has 5230 tokens"); `max_tokens` not below the context size; prompts × `n` over 128',
  }),
  atlas_disabled: spec({
    status: 400,
    type: invalidRequest,
    message: () => "The atlas extension is disabled on this server (ATLAS_ENABLED=0); remove 'atlas' from the request.",
    when: "`atlas` sent while `ATLAS_ENABLED=0`",
  }),
  too_many_messages: spec<{ count: number; max: number }>({
    status: 400,
    type: invalidRequest,
    message: (p) => `Invalid request at 'messages': ${p.count} messages is more than the ${p.max} this server accepts.`,
    when: "more than `ATLAS_MAX_MESSAGES` messages",
  }),
  invalid_url: spec({ status: 400, type: invalidRequest, message: () => "The request URL is malformed.", when: "a malformed URL" }),
  invalid_content_length: spec({
    status: 400,
    type: invalidRequest,
    message: () => "The Content-Length header does not match the body.",
    when: "`Content-Length` does not match the body",
  }),
  invalid_api_key: spec<{ missing: boolean }>({
    status: 401,
    type: authentication,
    message: (p) =>
      p.missing
        ? "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        : "Incorrect API key provided.",
    when: "missing or unknown key",
  }),
  admin_required: spec<{ what: string }>({
    status: 403,
    type: permission,
    message: (p) => `${p.what} and needs an admin API key.`,
    when: "a cluster operation (or another tenant's data) with a tenant key",
  }),
  model_not_found: spec<{ model: string }>({
    status: 404,
    type: notFound,
    message: (p) => `The model '${p.model}' does not exist or you do not have access to it.`,
    when: "no worker serves the `model` asked for",
  }),
  unknown_url: spec<{ method: string; path: string }>({
    status: 404,
    type: notFound,
    message: (p) => `Unknown request URL: ${p.method} ${p.path}. Please check the URL.`,
    when: "no route for the method and path",
  }),
  not_found: spec<{ message: string }>({
    status: 404,
    type: notFound,
    message: (p) => p.message,
    when: "a service found nothing by that name (a worker to drain, a stored object)",
  }),
  session_not_found: spec<{ session: string }>({
    status: 404,
    type: notFound,
    message: (p) => `No session "${p.session}" exists.`,
    when: "a memory endpoint's session does not exist (or is another tenant's)",
  }),
  conflict: spec<{ message: string }>({
    status: 409,
    type: invalidRequest,
    message: (p) => p.message,
    when: "a write that conflicts with the stored state",
  }),
  revision_mismatch: spec<{ message: string }>({
    status: 412,
    type: invalidRequest,
    message: (p) => p.message,
    when: "a memory write with `If-Match` at another revision",
  }),
  request_too_large: spec({
    status: 413,
    type: invalidRequest,
    message: () => "The request body is too large.",
    when: "body over `ATLAS_BODY_LIMIT_BYTES`",
  }),
  uri_too_long: spec({
    status: 414,
    type: invalidRequest,
    message: () => "A path segment of the request URL is too long.",
    when: "a path segment (a session id) far over its limit",
  }),
  unsupported_media_type: spec({
    status: 415,
    type: invalidRequest,
    message: () => "Unsupported Content-Type; send application/json.",
    when: "not JSON",
  }),
  rate_limit_exceeded: spec<RateLimited>({
    status: 429,
    type: rateLimit,
    message: rateLimited,
    when: "a request rate limit (per tenant, per session, global); with `Retry-After`",
  }),
  tokens_rate_limit_exceeded: spec<RateLimited>({
    status: 429,
    type: rateLimit,
    message: rateLimited,
    when: "a token rate limit; with `Retry-After`",
  }),
  server_overloaded: spec({
    status: 503,
    type: server,
    message: () => "The server is at capacity (too many requests at once); please retry shortly.",
    when: "`ATLAS_MAX_CONCURRENT` reached and the admission queue full or waited out; with `Retry-After`",
    retryAfterS: 1,
  }),
  overloaded: spec({
    status: 503,
    type: server,
    message: () => "The server is at capacity; retry later.",
    when: "every slot busy and the wait for one over; with `Retry-After`",
    retryAfterS: 1,
  }),
  service_unavailable: spec({
    status: 503,
    type: server,
    message: () => "The service is temporarily unavailable; retry later.",
    when: "a service (or NATS) is out; with `Retry-After`",
    retryAfterS: 1,
  }),
  no_workers: spec<{ model: string } | undefined>({
    status: 503,
    type: server,
    message: (p) =>
      p === undefined
        ? "No inference worker is available yet; retry shortly."
        : `The model '${p.model}' has no inference worker available right now (its workers are starting, restarting or draining); retry shortly.`,
    when: "no worker has registered yet, or none serves the requested model right now (a known model whose workers are starting, restarting or draining); with `Retry-After`",
    retryAfterS: 2,
  }),
  memory_unavailable: spec({
    status: 503,
    type: server,
    message: () => "Session memory is temporarily unavailable; retry later.",
    when: "a memory endpoint while persistence is out; with `Retry-After`",
    retryAfterS: 1,
  }),
  metrics_unavailable: spec({
    status: 503,
    type: server,
    message: () => "The metrics service is unavailable, so metrics cannot be shown right now; retry shortly.",
    when: "a metrics endpoint while the metrics service is out; with `Retry-After`",
    retryAfterS: 2,
  }),
  timeout: spec({
    status: 504,
    type: server,
    message: () => "The request timed out inside the server; retry later.",
    when: "a service did not answer in time",
  }),
  invalid_request: spec<{ message: string }>({
    status: 400,
    statuses: "400–499",
    type: invalidRequest,
    message: (p) => p.message,
    when: "any other request the HTTP layer refuses, with its own 4xx status (the server's own error names never reach the client)",
  }),
  internal_error: spec<{ requestId: string }>({
    status: 500,
    type: server,
    message: (p) => `The server had an error while processing your request (request id ${p.requestId}).`,
    when: "names the request id; never a stack or an internal name",
  }),
} as const;

/** One of the API's error codes. */
export type ApiErrorCode = keyof typeof API_ERRORS;
/** The values a code's message needs (`undefined`: none). */
export type ErrorParams<C extends ApiErrorCode> = (typeof API_ERRORS)[C] extends ErrorSpec<infer P> ? P : never;
