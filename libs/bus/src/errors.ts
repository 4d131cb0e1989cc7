/**
 * `BusError`: the one error type of the bus. It carries a code from the contracts' vocabulary,
 * whether a retry may help, and the original cause.
 *
 * @module
 */
import { type ErrorBody, ErrorCode, RETRYABLE_BY_DEFAULT } from "@atlas/contracts";
import { ZodError } from "zod";

/** Options for {@link BusError}. */
export interface BusErrorOptions {
  /** Default: true for `overloaded`, `unavailable` and `timeout`. */
  retryable?: boolean;
  /** Dotted path of the offending field, for validation errors. */
  param?: string | null;
  /** Seconds after which a retry makes sense. */
  retryAfterS?: number;
  /** `remote`: the receiver answered with this error; `local` (default): raised on this side. */
  origin?: "local" | "remote";
  cause?: unknown;
}

/** An error that crosses the bus, or that the bus raises itself. */
export class BusError extends Error {
  override readonly name = "BusError";
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly param: string | null;
  readonly retryAfterS: number | undefined;
  /**
   * `remote` when the receiver answered with this error (a sign of life), `local` when it was
   * raised on this side — nobody answered, no answer in time — which circuit breakers count.
   */
  readonly origin: "local" | "remote";

  constructor(code: ErrorCode, message: string, options: BusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
    this.param = options.param ?? null;
    this.retryAfterS = options.retryAfterS;
    this.origin = options.origin ?? "local";
  }

  /** The wire form of this error. */
  toBody(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        retryable: this.retryable,
        param: this.param,
        ...(this.retryAfterS === undefined ? {} : { retry_after_s: this.retryAfterS }),
      },
    };
  }

  /** Rebuilds an error from its wire form. */
  static fromBody(body: ErrorBody): BusError {
    const e = body.error;
    return new BusError(e.code, e.message, {
      retryable: e.retryable,
      param: e.param ?? null,
      origin: "remote",
      ...(e.retry_after_s === undefined ? {} : { retryAfterS: e.retry_after_s }),
    });
  }

  /**
   * Maps anything thrown by a handler to a `BusError`: zod failures are bad requests; NATS and
   * JetStream being out of reach (a timeout, no responders, a closed connection, JetStream
   * temporarily unavailable) is `unavailable` — retryable, so a caller sees a 503 rather than an
   * internal error while NATS restarts; anything else is `internal`.
   */
  static from(err: unknown): BusError {
    if (err instanceof BusError) return err;
    if (err instanceof ZodError) return BusError.fromZod(err);
    const message = err instanceof Error ? err.message : String(err);
    if (isNatsUnavailable(err)) {
      return new BusError(ErrorCode.unavailable, `NATS is not available right now: ${message}`, { cause: err, retryAfterS: 1 });
    }
    return new BusError(ErrorCode.internal, message || "Internal error", { cause: err });
  }

  /** A `bad_request` naming the first failing field of a zod error. */
  static fromZod(err: ZodError, what = "request"): BusError {
    const issue = err.issues[0];
    const param = issue === undefined || issue.path.length === 0 ? null : issue.path.map(String).join(".");
    const message =
      issue === undefined
        ? `Invalid ${what}`
        : `Invalid ${what}: ${param === null ? "" : `"${param}" `}${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}`;
    return new BusError(ErrorCode.badRequest, message, { param, cause: err });
  }
}

/** NATS client errors that mean "the server or JetStream cannot be reached now". */
const NATS_UNAVAILABLE = new Set([
  "TimeoutError",
  "NoResponders",
  "NoRespondersError",
  "ClosedConnectionError",
  "DrainingConnectionError",
  "ConnectionError",
  "JetStreamNotEnabled",
]);

/** Whether `err` (or its cause) says NATS or JetStream is out of reach for now. */
export function isNatsUnavailable(err: unknown, depth = 0): boolean {
  if (!(err instanceof Error) || depth > 3) return false;
  if (NATS_UNAVAILABLE.has(err.name)) return true;
  // JetStream API errors with a 503 status: "JetStream system temporarily unavailable", no quorum.
  if (err.name === "JetStreamApiError" && (err as Error & { status?: unknown }).status === 503) return true;
  if (err.name === "RequestError" || err.name === "JetStreamError" || err.name === "JetStreamStatusError") {
    return isNatsUnavailable(err.cause, depth + 1) || /timeout|no responders|not enabled|closed connection/i.test(err.message);
  }
  return false;
}

/** Races a promise against an abort signal. */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new BusError("cancelled", "Call aborted by the caller", { cause: signal.reason }));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** Maps a NATS client failure to a `BusError`. */
export function natsFailure(err: unknown, subject: string, timeoutMs: number): BusError {
  if (err instanceof BusError) return err;
  const name = err instanceof Error ? err.name : "";
  const text = err instanceof Error ? err.message : String(err);
  const noResponders =
    name === "NoRespondersError" ||
    (err instanceof Error && "isNoResponders" in err && typeof err.isNoResponders === "function" && err.isNoResponders() === true) ||
    (err instanceof Error && err.cause instanceof Error && err.cause.name === "NoRespondersError");
  if (noResponders) return new BusError("unavailable", `No service answers "${subject}"`, { cause: err });
  // A NATS permissions violation is a deployment error (see docs/security.md), never worth a retry.
  const permission =
    name === "PermissionViolationError" ||
    (err instanceof Error && err.cause instanceof Error && err.cause.name === "PermissionViolationError");
  if (permission) {
    return new BusError("internal", `Not permitted to publish to "${subject}" (NATS permissions)`, { cause: err, retryable: false });
  }
  if (name === "TimeoutError" || /timeout/i.test(text)) {
    return new BusError("timeout", `No reply on "${subject}" within ${timeoutMs} ms`, { cause: err });
  }
  return new BusError("unavailable", `Cannot reach "${subject}": ${text}`, { cause: err });
}
