/**
 * `@atlas/persistence`: the persistence service, for tests and embedding.
 *
 * @module
 */
export { persistenceService, startPersistence } from "./service.ts";
