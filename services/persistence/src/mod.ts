/**
 * `@atlas/persistence`: the persistence service, for tests and embedding.
 *
 * @module
 */

export { memoryKeyCommand } from "./memory_key.ts";
export { persistenceService, startPersistence } from "./service.ts";
