/**
 * `@atlas/scheduler`: the scheduler service, for tests and embedding.
 *
 * @module
 */
export { startScheduler } from "./service.ts";
