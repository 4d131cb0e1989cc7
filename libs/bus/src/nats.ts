/**
 * The NATS client's types that the services use beyond the bus's own verbs (`Bus.call`/`stream`/
 * `publish`…, `Bus.jetstream`), re-exported so that no service imports `@nats-io/*` itself. Only
 * types and `natsHeaders` (an object's metadata headers) leave this package: a service cannot
 * build a client of its own, so every stream, bucket and object store is created in one place
 * (`jetstream.ts`). One place pins the client's version and sees every primitive in use.
 *
 * @module
 */
export type { Consumer, JetStreamClient, JetStreamManager, JsMsg, PubAck, StoredMsg } from "@nats-io/jetstream";
export type { KV } from "@nats-io/kv";
export type { ObjectStore } from "@nats-io/obj";
export { headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
