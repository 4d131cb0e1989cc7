/**
 * `@atlas/client`: a typed client for an ATLAS server. See libs/client/README.md and docs/client.md.
 *
 * @module
 */
export type {
  AtlasChatCompletion,
  AtlasChatCompletionChunk,
  AtlasChatCompletions,
  AtlasCompletion,
  AtlasCompletions,
  WithAtlas,
} from "./chat.ts";
export { AtlasClient, type AtlasClientOptions } from "./client.ts";
export { AtlasError, type ClientErrorCode } from "./errors.ts";
export type { CallOptions } from "./http.ts";
export type { ListOptions, MemoryApi, PutOptions, PutResult, RevisedDocument, TenantOption } from "./memory.ts";
export type { MetricsApi, MetricsStreamEvent, ReconnectInfo, SubscribeOptions } from "./metrics.ts";
export * from "./schemas.ts";
export { parseSse, type SseMessage } from "./sse.ts";
