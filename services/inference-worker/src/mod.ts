/**
 * `@atlas/inference-worker`: the worker service and its engine, for tests and embedding.
 *
 * @module
 */
export { Engine, type EngineOptions } from "./engine.ts";
export { CLAIM_REFRESH_MS, CLAIM_TTL_MS, type ClaimedCredential, type ClaimOptions, claimWorkerCredential, poolUsers } from "./identity.ts";
export { modelIdOf, resolveWorkerId, startWorker, workerService } from "./service.ts";
