/**
 * `@atlas/inference-worker`: the worker service and its engine, for tests and embedding.
 *
 * @module
 */
export { Engine, type EngineOptions } from "./engine.ts";
export { modelIdOf, startWorker, workerService } from "./service.ts";
