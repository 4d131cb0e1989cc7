/**
 * The cluster's metrics as they are published: a few snapshots from the SSE stream (admin key),
 * then the position to resume from later (`lastEventId`).
 *
 *   node --conditions=development --import tsx libs/client/examples/metrics.ts
 */
import { clientFromEnv } from "./env.ts";

const client = clientFromEnv();
const ac = new AbortController();
let lastEventId: string | undefined;
let seen = 0;
for await (const event of client.metrics.subscribe({ signal: ac.signal, history: 1 })) {
  if (event.type === "reset") {
    console.log(`reset: ${event.reset.reason}`);
    continue;
  }
  const { snapshot } = event;
  lastEventId = event.id;
  const workers = Object.keys(snapshot.workers).length;
  const requests = Object.values(snapshot.totals.requests).reduce((a, b) => a + b, 0);
  console.log(`snapshot ${snapshot.seq}: ${workers} worker(s), ${requests} request(s) so far`);
  if (++seen === 3) ac.abort();
}
console.log(`resume from: ${lastEventId}`);
