/**
 * The inference-worker process. With `ATLAS_WORKER_CREDENTIALS` (compose), it first claims a
 * free user of the workers' NATS pool and runs as that user, with its name as worker id
 * (`identity.ts`, docs/adr/0015-worker-credentials.md).
 *
 * @module
 */
import { loadConfigOrExit } from "@atlas/config";
import { createLogger } from "@atlas/log";
import { runService } from "@atlas/service";
import { claimWorkerCredential } from "./identity.ts";
import { workerService } from "./service.ts";

const config = loadConfigOrExit();
if (config.ATLAS_WORKER_CREDENTIALS !== undefined) {
  const log = createLogger({ service: workerService.name, level: config.ATLAS_LOG_LEVEL, format: config.ATLAS_LOG_FORMAT });
  try {
    const claim = await claimWorkerCredential(config, log, config.ATLAS_WORKER_ID === undefined ? {} : { only: config.ATLAS_WORKER_ID });
    // runService reads the environment: the claimed user is this worker's NATS user and id.
    process.env.NATS_USER = claim.user;
    process.env.NATS_PASSWORD = claim.password;
    process.env.ATLAS_WORKER_ID = claim.user;
  } catch (err) {
    log.fatal({ err }, "Cannot claim a worker credential");
    log.flush?.();
    process.exit(1);
  }
}
await runService(workerService);
