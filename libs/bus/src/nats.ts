/**
 * The NATS client, owned here: the JetStream, KV and object store clients and the core types
 * the services use beyond the bus's own verbs (`Bus.call`/`stream`/`publish`…), re-exported so
 * that no service imports `@nats-io/*` itself. One place pins the client's version and sees
 * every primitive in use; a service's `package.json` names `@atlas/bus`, not the client.
 *
 * @module
 */
export {
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  type PubAck,
  type StoredMsg,
} from "@nats-io/jetstream";
export { type KV, Kvm } from "@nats-io/kv";
export { type ObjectStore, Objm } from "@nats-io/obj";
export { headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
