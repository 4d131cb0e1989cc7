/**
 * `@atlas/api`: the HTTP edge (for tests and embedding).
 *
 * @module
 */
export { type AppDeps, buildApp, sendError } from "./app.ts";
export { ApiError, ErrorType, toApiError } from "./errors.ts";
export { apiService, startApi } from "./service.ts";
export { type ClusterStatus, clusterStatus } from "./status.ts";
