/**
 * Operating the cluster with an admin key: its status, and draining a worker (`ATLAS_DRAIN_WORKER`)
 * before taking it down — its sessions move to L3 and continue on the other workers.
 *
 *   ATLAS_API_KEY=<admin key> ATLAS_DRAIN_WORKER=worker-1 node --conditions=development --import tsx libs/client/examples/admin.ts
 */
import { clientFromEnv } from "./env.ts";

const client = clientFromEnv();
const status = await client.status();
console.log(`status: ${status.status} (version ${status.version})`);
for (const [service, instances] of Object.entries(status.services ?? {})) {
  console.log(`  ${service}: ${instances.map((i) => `${i.instance}=${i.state}`).join(" ") || "none"}`);
}

const worker = process.env.ATLAS_DRAIN_WORKER;
if (worker !== undefined) {
  const r = await client.workers.drain(worker);
  console.log(`drained: ${r.worker_id} draining=${r.draining}`);
}
