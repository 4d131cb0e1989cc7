/**
 * {@link AtlasClient}: one object for everything an ATLAS server offers a program — generation
 * through the official OpenAI SDK with the `atlas` options typed (`chat.ts`), session memory
 * (`memory.ts`), the metrics stream (`metrics.ts`), the cluster's status and worker drain.
 *
 * @module
 */
import OpenAI from "openai";
import { type AtlasChatCompletions, type AtlasCompletions, atlasChat, atlasCompletions } from "./chat.ts";
import { type CallOptions, serverRoot, Transport } from "./http.ts";
import { MemoryApi } from "./memory.ts";
import { MetricsApi } from "./metrics.ts";
import { ClusterStatus, DrainResult } from "./schemas.ts";

/** `new AtlasClient(options)`. */
export interface AtlasClientOptions {
  /** The server's root, `http://127.0.0.1:8080` (a trailing `/v1` is accepted). */
  baseURL: string;
  /** The API key (`ATLAS_API_KEYS`); leave it out for a server without keys. */
  apiKey?: string | undefined;
  /** Another `fetch` implementation, used by the SDK and by every other call. */
  fetch?: typeof fetch | undefined;
  /** Milliseconds a call may wait for its answer (default 60 000; for a stream, until its headers). */
  timeout?: number | undefined;
  /** The SDK's retries of a failed generation request (default 2, as the SDK's). */
  maxRetries?: number | undefined;
  /** Headers sent with every request. */
  defaultHeaders?: Record<string, string> | undefined;
}

/** A client of one ATLAS server. */
export class AtlasClient {
  /** The official OpenAI SDK, pointed at this server's `/v1` (models, files of other tools…). */
  readonly openai: OpenAI;
  /** Chat completions with the `atlas` options typed. */
  readonly chat: { completions: AtlasChatCompletions };
  /** Text completions with the `atlas` options typed. */
  readonly completions: AtlasCompletions;
  /** Session memory: list, get/export, put/import, append, delete. */
  readonly memory: MemoryApi;
  /** Metrics: the current view, Prometheus text, and the snapshot stream. */
  readonly metrics: MetricsApi;
  /** Cluster operations (admin keys). */
  readonly workers: { drain(workerId: string, options?: CallOptions): Promise<DrainResult> };
  /** The server's root URL. */
  readonly baseURL: string;
  readonly #http: Transport;

  constructor(options: AtlasClientOptions) {
    const timeoutMs = options.timeout ?? 60_000;
    this.baseURL = serverRoot(options.baseURL);
    this.#http = new Transport({
      baseURL: this.baseURL,
      apiKey: options.apiKey,
      fetch: options.fetch,
      timeoutMs,
      headers: options.defaultHeaders,
    });
    this.openai = new OpenAI({
      baseURL: `${this.baseURL}/v1`,
      // The SDK insists on a key; a server without keys ignores it.
      apiKey: options.apiKey ?? "unused",
      timeout: timeoutMs,
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
      ...(options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }),
      ...(options.defaultHeaders === undefined ? {} : { defaultHeaders: options.defaultHeaders }),
    });
    this.chat = atlasChat(this.openai);
    this.completions = atlasCompletions(this.openai);
    this.memory = new MemoryApi(this.#http);
    this.metrics = new MetricsApi(this.#http);
    const http = this.#http;
    this.workers = {
      /** Stops leasing the worker's slots and moves its sessions to L3 (admin; 404 `not_found` for an unknown worker). */
      async drain(workerId: string, callOptions: CallOptions = {}): Promise<DrainResult> {
        const path = `/v1/atlas/workers/${encodeURIComponent(workerId)}/drain`;
        return (await http.json(DrainResult, { ...callOptions, method: "POST", path })).data;
      },
    };
  }

  /** `GET /v1/atlas/status`: `ok | degraded | down`; with an admin key every instance, NATS, the pool and the api's state. */
  async status(options: CallOptions = {}): Promise<ClusterStatus> {
    return (await this.#http.json(ClusterStatus, { ...options, method: "GET", path: "/v1/atlas/status" })).data;
  }
}
