/**
 * A conversation with memory: two turns in one `atlas.session_id`; the second sends only its new
 * message, the server places the first exchange before it.
 *
 *   ATLAS_BASE_URL=http://127.0.0.1:8080 node --conditions=development --import tsx libs/client/examples/chat.ts
 */
import { clientFromEnv, firstModel } from "./env.ts";

const client = clientFromEnv();
const model = await firstModel(client);
const session_id = `example-chat-${Date.now()}`;

for (const content of ["My name is Ada.", "What is my name?"]) {
  const r = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content }],
    max_tokens: 16,
    seed: 1,
    atlas: { session_id, cache_strategy: "lru" },
  });
  console.log(`user: ${content}`);
  console.log(`assistant: ${JSON.stringify(r.choices[0]?.message.content)}`);
  // Typed: `r.atlas` is the `atlas` response object.
  console.log(`atlas: cache=${r.atlas?.cache.outcome} memory_layers=${r.atlas?.memory?.layers ?? 0} workers=${r.atlas?.workers.join(",")}`);
}
await client.memory.delete(session_id);
