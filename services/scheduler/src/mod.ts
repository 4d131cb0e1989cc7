/**
 * `@atlas/scheduler`: the scheduler service, for tests and embedding.
 *
 * @module
 */
export { schedulerService, startScheduler } from "./service.ts";
export { leaseKey } from "./store.ts";
