/**
 * The metrics snapshots straight from NATS, for a program inside the cluster's network:
 * `NATS_URL`, `ATLAS_NATS_PREFIX` (default `atlas`), and `NATS_USER`/`NATS_PASSWORD` when the
 * server wants them (a user that may subscribe to `<prefix>.metrics.snapshot`).
 *
 *   NATS_URL=nats://127.0.0.1:4222 node --conditions=development --import tsx libs/client/examples/metrics_nats.ts
 */
import { subscribeMetricsOverNats } from "@atlas/client/nats";

const ac = new AbortController();
let seen = 0;
for await (const snapshot of subscribeMetricsOverNats({
  servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
  prefix: process.env.ATLAS_NATS_PREFIX ?? "atlas",
  user: process.env.NATS_USER,
  pass: process.env.NATS_PASSWORD,
  signal: ac.signal,
})) {
  const workers = Object.keys(snapshot.workers).length;
  console.log(`snapshot ${snapshot.seq} of ${snapshot.instance}: ${workers} worker(s)`);
  if (++seen === 3) ac.abort();
}
