/**
 * What each service may publish and subscribe to on NATS, one declaration per service, next to
 * the contracts they name. `npm run nats-config` (`libs/supervisor`) renders them into the
 * nats-server configuration, one user per service (docs/security.md).
 *
 * @module
 */
import type { ServicePermissions } from "../permissions.ts";
import { permissions as api } from "./api.ts";
import { permissions as inferenceWorker } from "./inference-worker.ts";

export {
  isWorkerCredential,
  WORKER_CREDENTIAL_PATTERN,
  WorkerClaim,
  WorkerPasswordFile,
  workerClaimsBucket,
  workerCredentialName,
  workerPermissions,
  workerPoolPermissions,
} from "./inference-worker.ts";

import { permissions as metrics } from "./metrics.ts";
import { permissions as persistence } from "./persistence.ts";
import { permissions as scheduler } from "./scheduler.ts";

/** Each service's permissions under a subject prefix, by service name. */
export const SERVICE_PERMISSIONS: Readonly<Record<string, (prefix: string) => ServicePermissions>> = {
  api,
  "inference-worker": inferenceWorker,
  metrics,
  persistence,
  scheduler,
};
