/**
 * Message definitions as values. A contract names its subject, and the zod schemas of what
 * crosses it; the sender and the receiver import the same value, so neither can drift.
 *
 * @module
 */
import type { z } from "zod";

/** Builds a concrete subject from the cluster prefix and the contract's parameters. */
export type SubjectFn<P> = (prefix: string, params: P) => string;

/** A request with exactly one reply. */
export interface RpcContract<P, Req extends z.ZodType, Res extends z.ZodType> {
  readonly kind: "rpc";
  /** Stable endpoint name, used in discovery and metrics: `scheduler.lease.acquire`. */
  readonly name: string;
  readonly subject: SubjectFn<P>;
  readonly request: Req;
  readonly response: Res;
}

/** A request answered by many chunks, then one explicit end (or one error). */
export interface StreamContract<P, Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType> {
  readonly kind: "stream";
  readonly name: string;
  readonly subject: SubjectFn<P>;
  readonly request: Req;
  readonly chunk: Chunk;
  readonly end: End;
}

/** A fire-and-forget event published to whoever subscribes. */
export interface EventContract<P, Data extends z.ZodType> {
  readonly kind: "event";
  readonly name: string;
  readonly subject: SubjectFn<P>;
  readonly data: Data;
}

/**
 * Messages a JetStream stream keeps: published with the stream's acknowledgement as the reply,
 * read back by a durable consumer or by direct gets. `stream` is the stream's configuration under
 * a prefix (its owner creates it through the bus, `Bus.jetstream.ensureStream`).
 */
export interface JetStreamContract<P> {
  readonly kind: "jetstream";
  readonly name: string;
  readonly subject: SubjectFn<P>;
  readonly stream: (prefix: string) => { name: string; subjects: string[] };
}

/** Options shared by the `define*` helpers. */
export interface DefineOptions<P> {
  name: string;
  subject: SubjectFn<P>;
}

/** Defines a request/reply contract. */
export function defineRpc<Req extends z.ZodType, Res extends z.ZodType, P = void>(
  options: DefineOptions<P> & { request: Req; response: Res },
): RpcContract<P, Req, Res> {
  return { kind: "rpc", ...options };
}

/** Defines a streaming contract: one request, many chunks, one end. */
export function defineStream<Req extends z.ZodType, Chunk extends z.ZodType, End extends z.ZodType, P = void>(
  options: DefineOptions<P> & { request: Req; chunk: Chunk; end: End },
): StreamContract<P, Req, Chunk, End> {
  return { kind: "stream", ...options };
}

/** Defines an event contract. */
export function defineEvent<Data extends z.ZodType, P = void>(options: DefineOptions<P> & { data: Data }): EventContract<P, Data> {
  return { kind: "event", ...options };
}

/** Defines a JetStream contract; `extra` carries what its sender and handler share beyond it (a consumer, a data schema). */
export function defineJetStream<P, S extends JetStreamContract<P>["stream"], Extra extends object>(
  options: DefineOptions<P> & { stream: S } & Extra,
): JetStreamContract<P> & { stream: S } & Extra {
  return { kind: "jetstream", ...options };
}
