/**
 * The inference-worker process. With `ATLAS_WORKER_CREDENTIALS` (compose), it first claims a
 * free user of the workers' NATS pool and runs as that user, with its name as worker id
 * (`identity.ts`, docs/adr/0015-worker-credentials.md). The claim is released when the service
 * has stopped cleanly (after its bus drained) or failed to start, so the user is free at once; a
 * process that loses its claim exits (`identity.ts`).
 *
 * @module
 */
import { loadConfigOrExit } from "@atlas/config";
import { createLogger } from "@atlas/log";
import { runService, type ServiceDefinition } from "@atlas/service";
import { type ClaimedCredential, claimWorkerCredential } from "./identity.ts";
import { workerService } from "./service.ts";

/** `definition`, releasing `claim` once it has stopped (or could not start). */
function releasingClaim(definition: ServiceDefinition, claim: ClaimedCredential): ServiceDefinition {
  return {
    ...definition,
    start: async (ctx) => {
      const handle = await definition.start(ctx).catch(async (err: unknown) => {
        await claim.release();
        throw err;
      });
      return {
        ...handle,
        dispose: async () => {
          try {
            await handle.dispose?.();
          } finally {
            await claim.release();
          }
        },
      };
    },
  };
}

const config = loadConfigOrExit();
let definition: ServiceDefinition = workerService;
if (config.ATLAS_WORKER_CREDENTIALS !== undefined) {
  const log = createLogger({ service: workerService.name, level: config.ATLAS_LOG_LEVEL, format: config.ATLAS_LOG_FORMAT });
  try {
    const claim = await claimWorkerCredential(config, log, config.ATLAS_WORKER_ID === undefined ? {} : { only: config.ATLAS_WORKER_ID });
    // runService reads the environment: the claimed user is this worker's NATS user and id.
    process.env.NATS_USER = claim.user;
    process.env.NATS_PASSWORD = claim.password;
    process.env.ATLAS_WORKER_ID = claim.user;
    definition = releasingClaim(workerService, claim);
  } catch (err) {
    log.fatal({ err }, "Cannot claim a worker credential");
    log.flush?.();
    process.exit(1);
  }
}
await runService(definition);
