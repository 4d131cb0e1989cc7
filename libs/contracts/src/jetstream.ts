/**
 * What JetStream itself answers a publish with, for contracts whose reply comes straight from
 * JetStream (the handler forwards the message to a stream with the caller's reply subject; see
 * `serveForward` in `libs/bus/src/rpc.ts`). The shapes are nats-server's (`PubAck` and the
 * JetStream API error of its `jetstream_errors_generated.go`).
 *
 * @module
 */
import { z } from "zod";

/** A stored message: the stream and its sequence; `duplicate` when `Nats-Msg-Id` matched an earlier one. */
export const JetStreamPubAck = z.object({
  stream: z.string(),
  seq: z.number().int().nonnegative(),
  duplicate: z.boolean().optional(),
  domain: z.string().optional(),
});
/** A stored message. */
export type JetStreamPubAck = z.infer<typeof JetStreamPubAck>;

/** A publish JetStream refused (no space, a failed expectation, no leader, …). */
export const JetStreamPubError = z.object({
  error: z.object({ code: z.number().int(), err_code: z.number().int().optional(), description: z.string().optional() }),
});
/** A publish JetStream refused. */
export type JetStreamPubError = z.infer<typeof JetStreamPubError>;

/** JetStream's answer to a publish: stored, or refused. */
export const JetStreamPubReply = z.union([JetStreamPubAck, JetStreamPubError]);
