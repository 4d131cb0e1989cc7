/**
 * `@atlas/persistence`: the persistence service, for tests and embedding.
 *
 * @module
 */
export { startPersistence } from "./service.ts";
