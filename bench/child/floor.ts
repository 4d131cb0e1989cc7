/**
 * The floor of the request path's architecture, without ATLAS (`bench/scenarios/floor.ts`): the
 * same parts the stack is made of, doing nothing. Two roles:
 *
 * - `http`: a fastify server with one `POST /v1/chat/completions` route that parses the JSON body
 *   and answers a small chat completion; with `hop`, it first sends the body over one NATS
 *   request/reply (the api → worker hop of the common case) and answers with what comes back.
 * - `responder`: a NATS subscriber that answers every request at once with that completion.
 *
 * Both use the NATS client the services use (`@nats-io/transport-node`, same options as
 * `libs/bus`'s connection: no async traces). Nothing is validated, logged or counted.
 *
 * Protocol: `{type: "start", spec}` → `{type: "ready", port?}`; `{type: "stop"}` → exits.
 *
 * @module
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import Fastify, { type FastifyInstance } from "fastify";

/** What to run. */
export interface FloorSpec {
  role: "http" | "responder";
  natsUrl: string;
  subject: string;
  /** `http` only: send each request over NATS before answering. */
  hop?: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A chat completion of one token, shaped like the api's answer (so the bytes on the wire match). */
function completion(): Record<string, unknown> {
  return {
    id: "chatcmpl-floor",
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: "floor",
    choices: [{ index: 0, message: { role: "assistant", content: "x" }, finish_reason: "length", logprobs: null }],
    usage: { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 },
  };
}

let nc: NatsConnection | undefined;
let app: FastifyInstance | undefined;

async function start(spec: FloorSpec): Promise<number | undefined> {
  nc = await connect({ servers: spec.natsUrl, noAsyncTraces: true });
  if (spec.role === "responder") {
    nc.subscribe(spec.subject, {
      callback: (_err, msg) => {
        const body = JSON.parse(decoder.decode(msg.data)) as { model?: string };
        msg.respond(encoder.encode(JSON.stringify({ ...completion(), model: body.model ?? "floor" })));
      },
    });
    await nc.flush();
    return undefined;
  }
  const conn = nc;
  app = Fastify({ logger: false });
  app.post("/v1/chat/completions", async (request, reply) => {
    if (spec.hop !== true) return completion();
    const answer = await conn.request(spec.subject, encoder.encode(JSON.stringify(request.body)), { timeout: 5000 });
    reply.header("content-type", "application/json; charset=utf-8");
    return decoder.decode(answer.data);
  });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  return typeof address === "object" && address !== null ? address.port : undefined;
}

process.on("message", (msg: { type: string; spec?: FloorSpec }) => {
  if (msg.type === "start" && msg.spec !== undefined) {
    start(msg.spec).then(
      (port) => process.send?.({ type: "ready", result: { port } }),
      (err: unknown) => process.send?.({ type: "error", message: err instanceof Error ? err.message : String(err) }),
    );
  } else if (msg.type === "stop") {
    void Promise.allSettled([app?.close(), nc?.close()]).then(() => process.exit(0));
  }
});
