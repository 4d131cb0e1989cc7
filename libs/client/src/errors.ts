/**
 * {@link AtlasError}: what every method of `@atlas/client` outside `client.openai` throws when a
 * call fails — an HTTP error (with the server's OpenAI-format body), no answer in time, or an
 * answer that does not match its schema.
 *
 * @module
 */
import { ErrorBody } from "./schemas.ts";

/** What went wrong, when it was not the server's own error. */
export type ClientErrorCode = "timeout" | "connection_error" | "invalid_response" | "aborted";

/** A failed call. `status` and `body` are the server's; `status` is 0 when no answer came. */
export class AtlasError extends Error {
  override readonly name = "AtlasError";
  /** HTTP status; 0 when there was no HTTP answer (timeout, connection refused, aborted). */
  readonly status: number;
  /** The error in OpenAI's format (made up by the client for the status 0 and bad-answer cases). */
  readonly body: ErrorBody;
  /** Seconds the server asked to wait before a retry (`Retry-After`), when it did. */
  readonly retryAfterS: number | undefined;
  /** The request's `x-request-id`, when the server answered. */
  readonly requestId: string | undefined;

  constructor(
    status: number,
    body: ErrorBody,
    options: { retryAfterS?: number | undefined; requestId?: string | undefined; cause?: unknown } = {},
  ) {
    super(body.error.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = status;
    this.body = body;
    this.retryAfterS = options.retryAfterS;
    this.requestId = options.requestId;
  }

  /** The error's `code` (`session_not_found`, `admin_required`…, or a {@link ClientErrorCode}). */
  get code(): string | null {
    return this.body.error.code;
  }

  /** The error's `type` (`invalid_request_error`, `server_error`…). */
  get type(): string {
    return this.body.error.type;
  }

  /** The request field the error names, if any. */
  get param(): string | null {
    return this.body.error.param;
  }

  /** Whether the same call may succeed later: a 429, 5xx, timeout or lost connection. */
  get retryable(): boolean {
    return this.status === 429 || this.status >= 500 || this.code === "timeout" || this.code === "connection_error";
  }

  /** An error the client itself detected. */
  static client(
    code: ClientErrorCode,
    message: string,
    options: { status?: number; cause?: unknown; requestId?: string } = {},
  ): AtlasError {
    const type = code === "invalid_response" ? "server_error" : "connection_error";
    return new AtlasError(options.status ?? 0, { error: { message, type, param: null, code } }, options);
  }

  /** The error of a non-2xx answer: its body when it is OpenAI's format, else one made from its status. */
  static async fromResponse(res: Response): Promise<AtlasError> {
    const text = await res.text().catch(() => "");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = ErrorBody.safeParse(json);
    const retryAfter = Number(res.headers.get("retry-after") ?? Number.NaN);
    const options = {
      retryAfterS: Number.isFinite(retryAfter) ? retryAfter : undefined,
      requestId: res.headers.get("x-request-id") ?? undefined,
    };
    if (parsed.success) return new AtlasError(res.status, parsed.data, options);
    const message = `HTTP ${res.status}${text === "" ? "" : `: ${text.slice(0, 200)}`}`;
    const type = res.status >= 500 ? "server_error" : "invalid_request_error";
    return new AtlasError(res.status, { error: { message, type, param: null, code: null } }, options);
  }
}
