/**
 * A streamed chat: the text as it comes, then the last chunk's `usage` and `atlas`.
 *
 *   node --conditions=development --import tsx libs/client/examples/stream.ts
 */
import { clientFromEnv, firstModel } from "./env.ts";

const client = clientFromEnv();
const stream = await client.chat.completions.create({
  model: await firstModel(client),
  messages: [{ role: "user", content: "Tell me a story." }],
  max_tokens: 24,
  stream: true,
  stream_options: { include_usage: true },
  atlas: { batch_size: 1 },
});
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  process.stdout.write(chunk.choices[0]?.delta.content ?? "");
  if (chunk.usage) console.log(`\nusage: ${chunk.usage.completion_tokens} completion tokens in ${chunks} chunks`);
  if (chunk.atlas) console.log(`atlas: total_ms=${chunk.atlas.timings.total_ms} cache=${chunk.atlas.cache.outcome}`);
}
