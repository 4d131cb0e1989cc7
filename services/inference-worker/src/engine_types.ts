import type { GenerateChunk, GenerateEnd, GenerateRequest } from "@atlas/contracts";
import type { LlamaContextSequence } from "node-llama-cpp";
import type { BinaryChoice, GpuChoice, LlamaBackend } from "./llama.ts";

/** A generate request as the contract's schema outputs it (defaults applied). */
export type EngineRequest = ReturnType<typeof GenerateRequest.parse>;

/** How a generation ended: the contract's `GenerateEnd` without `worker_id`. */
export type EngineResult = Omit<ReturnType<typeof GenerateEnd.parse>, "worker_id" | "cache_tier" | "fencing_token" | "credit">;

/** A log function that takes fields and a message (pino's and console's shape). */
export type EngineLogFn = (fields: Record<string, unknown>, message: string) => void;

/** Where the engine logs; pino loggers fit. */
export interface EngineLogger {
  info: EngineLogFn;
  warn: EngineLogFn;
  error: EngineLogFn;
  debug: EngineLogFn;
}

/** Options for {@link Engine.load}. */
export interface EngineOptions {
  /** Path of the GGUF model. */
  modelPath: string;
  /** Sequences in the context: how many generations run at once. */
  slots: number;
  /**
   * Tokens per slot (each sequence gets the full size). llama.cpp rounds it up to a multiple of
   * 256; `info.contextSize` is the real size.
   */
  contextSize: number;
  /**
   * CPU threads for prompt and decode. Use 1 with the prebuilt binary; the source build
   * (`npm run build:engine`, OpenMP) scales with more (docs/configuration.md).
   */
  threads: number;
  /**
   * GPU backend (node-llama-cpp's `gpu`): `false` (default) runs on the CPU, `auto` on the best
   * GPU found or else the CPU; a named one must load or {@link Engine.load} fails.
   */
  gpu?: GpuChoice;
  /** Layers offloaded to the GPU (node-llama-cpp's `gpuLayers`); ignored on the CPU. Default `auto`. */
  gpuLayers?: "auto" | "max" | number;
  /**
   * Which llama.cpp binary: `auto` (default) the source build when there is one for the GPU type,
   * else the prebuilt binary; `prebuilt` or `source` only that one (benchmarks compare them).
   */
  binary?: BinaryChoice;
  /** Default: no logging. */
  logger?: EngineLogger;
  /** Local wait queue bound; more waiting requests are refused with `overloaded`. Default `4 × slots`. */
  maxQueue?: number;
  /** Length cap of JSON strings whose schema gives no `maxLength`. Default 256. */
  maxJsonStringLength?: number;
  /** Aborts loading. */
  signal?: AbortSignal;
}

/** What the loaded model and context are. */
export interface EngineInfo {
  /** `modelFingerprint` of the file: the same id on every worker with the same model. */
  readonly fingerprint: string;
  /** Tokens per slot, as llama.cpp created it. */
  readonly contextSize: number;
  readonly slots: number;
  /** `context_length` the model was trained with. */
  readonly trainContextLength: number;
  /** Number of weights. */
  readonly parameters?: number;
  /** `general.architecture`. */
  readonly architecture: string;
  /** Whether the model file has a chat template. */
  readonly chatTemplate: boolean;
  /** What llama.cpp runs on. */
  readonly backend: EngineBackend;
}

/** The llama.cpp binary and device the engine got (status and logs report it). */
export interface EngineBackend extends LlamaBackend {
  /** Model layers on the GPU (0 on the CPU). */
  readonly gpuLayers: number;
  /** CPU threads. */
  readonly threads: number;
}

/** GPU memory, in bytes, while a GPU is in use. */
export interface VramState {
  readonly total: number;
  readonly used: number;
  readonly free: number;
}

/** Options for {@link Engine.generate}. */
export interface GenerateOptions {
  /** Aborts waiting and generating; the call then rejects with a `cancelled` `BusError`. */
  signal: AbortSignal;
  /** Receives the text as it is generated, in whole characters. Called synchronously; throwing aborts. */
  onChunk: (chunk: GenerateChunk) => void;
  /**
   * Generate on this slot, waiting for it if busy: the seam for session affinity (a session's
   * tokens live in one slot). Default: the free slot holding the longest prefix of the prompt.
   */
  slot?: number;
  /**
   * Added to the logits of these token ids, OpenAI's `logit_bias` semantics (−100 bans, +100
   * forces). End-of-generation tokens cannot be biased (node-llama-cpp skips them).
   */
  logitBias?: Readonly<Record<number, number>>;
  /**
   * Receives each generated token id (not end-of-generation tokens) before the text it completes
   * is emitted: for diagnostics and tests, and the seam for per-token data such as `logprobs`.
   */
  onToken?: (token: number) => void;
  /**
   * Runs once the slot is held and before the prompt is evaluated: the seam for the KV tiers
   * (snapshot the session the slot held, or restore the request's session from a snapshot).
   */
  prepare?: (slot: SlotAccess) => Promise<void>;
}

/** What {@link GenerateOptions.prepare} may do with the held slot. */
export interface SlotAccess {
  readonly slot: number;
  /** Tokens in the slot's KV cache. */
  readonly tokens: number;
  /** Writes the slot's KV state to `path`; resolves with its size in bytes. */
  save(path: string): Promise<number>;
  /** Replaces the slot's KV state with the one in `path` (same model only). */
  restore(path: string): Promise<void>;
}

/** The state of one slot, for heartbeats. */
export interface SlotState {
  readonly slot: number;
  readonly busy: boolean;
  /** Tokens held in the slot's KV cache. */
  readonly tokens: number;
}

/** Options for {@link EngineLoadError}. */
export interface EngineLoadErrorOptions {
  path: string;
  problems: readonly string[];
  cause?: unknown;
}

/** A model that cannot be loaded: missing, truncated, invalid, or refused by llama.cpp. */
export class EngineLoadError extends Error {
  override readonly name = "EngineLoadError";
  /** The model path. */
  readonly path: string;
  /** Every problem found (validation problems, or llama.cpp's own log lines). */
  readonly problems: readonly string[];

  constructor(message: string, options: EngineLoadErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.path = options.path;
    this.problems = options.problems;
  }
}

/** Generated tokens that presence and frequency penalties look back on (llama-server: 64). */
export const PENALTY_WINDOW = 256;

/** `top_k` applied when sampling with a temperature (llama.cpp's and llama-server's default). */
export const TOP_K = 40;

/** Temperatures below this are greedy decoding (see `#run`). */
export const MIN_TEMPERATURE = 1e-3;

/** One context sequence of the engine. */
export interface Slot {
  readonly index: number;
  readonly sequence: LlamaContextSequence;
}

/** An error's message (or the thrown value as text). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * What the worker's service needs of a backend that runs generations on slots: the local
 * llama.cpp {@link Engine} (`engine.ts`) and the proxy in front of an OpenAI-compatible server
 * (`proxy_engine.ts`) both are one (`ATLAS_WORKER_BACKEND`).
 */
export interface GenerationBackend {
  readonly info: { readonly slots: number; readonly contextSize: number; readonly fingerprint: string };
  readonly freeSlots: number;
  readonly queued: number;
  slotStates(): SlotState[];
  generate(request: EngineRequest, options: GenerateOptions): Promise<EngineResult>;
  dispose(): Promise<void>;
}
