/**
 * The one error vocabulary of the bus. A handler's failure travels as an {@link ErrorBody};
 * whether the caller may retry is part of the error, not a guess made by the caller.
 *
 * @module
 */
import { z } from "zod";

/** Error codes that cross the bus. */
export const ErrorCode = {
  /** The request failed validation at the receiver. */
  badRequest: "bad_request",
  /** The thing asked for does not exist. */
  notFound: "not_found",
  /** The receiver refuses: a conflict with current state (stale fencing token, revision). */
  conflict: "conflict",
  /** The receiver is at capacity; try later. */
  overloaded: "overloaded",
  /** Nobody answers the subject, or the receiver is not ready. */
  unavailable: "unavailable",
  /** No reply (or no next chunk) in time. */
  timeout: "timeout",
  /** The caller aborted. */
  cancelled: "cancelled",
  /** The reply did not match the contract. */
  badReply: "bad_reply",
  /** Anything else: a bug or an unexpected failure at the receiver. */
  internal: "internal",
} as const;
/** One of the bus error codes. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Codes a caller may retry without changing its request. */
export const RETRYABLE_BY_DEFAULT: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.overloaded,
  ErrorCode.unavailable,
  ErrorCode.timeout,
]);

/** The wire form of an error reply (the body of an error message). */
export const ErrorBody = z.object({
  error: z.object({
    code: z.enum(Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]]),
    message: z.string(),
    retryable: z.boolean(),
    /** Where a validation error points, as a dotted path (`messages.0.role`). */
    param: z.string().nullable().optional(),
    /** Seconds after which a retry makes sense (overloaded, unavailable). */
    retry_after_s: z.number().nonnegative().optional(),
  }),
});
/** The wire form of an error reply. */
export type ErrorBody = z.infer<typeof ErrorBody>;
