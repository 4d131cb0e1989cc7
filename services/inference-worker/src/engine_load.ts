/**
 * Loading a model for the `Engine` (`engine.ts`): option checks, the GGUF file validated before
 * llama.cpp sees it (some bad files abort the process), its fingerprint, the shared `Llama` for
 * the chosen binary and GPU (`llama.ts`), the model and its context, with llama.cpp's own log
 * lines kept as the reason of a failure; then the line that says what was loaded, on what.
 *
 * @module
 */
import { resolve } from "node:path";
import { setImmediate as nextTick } from "node:timers/promises";
import { modelFingerprint, validateLlamaModel } from "@atlas/gguf";
import { type LlamaContext, LlamaLogLevel, type LlamaModel } from "node-llama-cpp";
import { type EngineInfo, EngineLoadError, type EngineLogger, type EngineOptions, errorMessage } from "./engine_types.ts";
import { DEFAULT_MAX_STRING_LENGTH } from "./grammar.ts";
import { acquireLlama, type LlamaHandle, onLlamaLog } from "./llama.ts";

const silent: EngineLogger = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} };

/** node-llama-cpp's `gpuLayers` for a model: `auto` fits the layers beside the KV cache of every slot. */
function gpuLayersOption(
  layers: "auto" | "max" | number,
  options: { contextSize: number; slots: number },
): "max" | number | { fitContext: { contextSize: number } } {
  return layers === "auto" ? { fitContext: { contextSize: options.contextSize * options.slots } } : layers;
}

function positiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`Invalid engine option "${name}": expected a positive integer, got "${String(value)}"`);
  }
}

/** What an `Engine` is made of. */
export interface EngineParts {
  info: EngineInfo;
  handle: LlamaHandle;
  model: LlamaModel;
  context: LlamaContext;
  logger: EngineLogger;
  maxQueue: number | undefined;
  maxJsonStringLength: number;
  unsubscribeLog: () => void;
}

/**
 * Validates the GGUF file, loads the model and creates the context.
 *
 * @throws {EngineLoadError} for a missing, truncated or invalid file, or one llama.cpp refuses
 * (with llama.cpp's logged reason in `problems`).
 * @throws {RangeError} for invalid options.
 */
export async function loadEngineParts(options: EngineOptions): Promise<EngineParts> {
  positiveInteger("slots", options.slots);
  positiveInteger("contextSize", options.contextSize);
  positiveInteger("threads", options.threads);
  if (options.maxQueue !== undefined && (!Number.isSafeInteger(options.maxQueue) || options.maxQueue < 0)) {
    throw new RangeError(`Invalid engine option "maxQueue": expected a non-negative integer, got "${String(options.maxQueue)}"`);
  }
  const { gpuLayers } = options;
  if (gpuLayers !== undefined && gpuLayers !== "auto" && gpuLayers !== "max" && (!Number.isSafeInteger(gpuLayers) || gpuLayers < 0)) {
    throw new RangeError(`Invalid engine option "gpuLayers": expected "auto", "max" or a non-negative integer, got "${String(gpuLayers)}"`);
  }
  const maxJsonStringLength = options.maxJsonStringLength ?? DEFAULT_MAX_STRING_LENGTH;
  positiveInteger("maxJsonStringLength", maxJsonStringLength);
  const logger = options.logger ?? silent;
  const path = resolve(options.modelPath);
  const { signal } = options;

  const validation = await validateLlamaModel(path, signal === undefined ? {} : { signal });
  if (!validation.ok) {
    throw new EngineLoadError(`Cannot load model "${path}": ${validation.problems.join("; ")}`, { path, problems: validation.problems });
  }
  for (const warning of validation.warnings) logger.warn({ model: path }, warning);
  signal?.throwIfAborted();
  let fingerprint: string;
  try {
    fingerprint = await modelFingerprint(path, signal === undefined ? {} : { signal });
  } catch (err) {
    throw new EngineLoadError(`Cannot read model "${path}": ${errorMessage(err)}`, { path, problems: [errorMessage(err)], cause: err });
  }

  let handle: LlamaHandle;
  try {
    handle = await acquireLlama({ threads: options.threads, gpu: options.gpu ?? false, binary: options.binary ?? "auto" });
  } catch (err) {
    throw new EngineLoadError(`Cannot start llama.cpp for model "${path}": ${errorMessage(err)}`, {
      path,
      problems: [errorMessage(err)],
      cause: err,
    });
  }
  const logged: string[] = [];
  const unsubscribeLog = onLlamaLog((line) => {
    if (line.level === LlamaLogLevel.error || line.level === LlamaLogLevel.fatal) {
      logged.push(line.message);
      logger.error({ source: "llama.cpp" }, line.message);
    } else if (line.level === LlamaLogLevel.warn) {
      logger.warn({ source: "llama.cpp" }, line.message);
    } else {
      logger.debug({ source: "llama.cpp" }, line.message);
    }
  });
  const fail = async (what: string, err: unknown, model?: LlamaModel): Promise<never> => {
    await nextTick(); // node-llama-cpp delivers native log lines on a later tick
    unsubscribeLog();
    await model?.dispose().catch(() => {});
    await handle.release().catch(() => {});
    const problems = logged.length > 0 ? [...new Set(logged)] : [errorMessage(err)];
    // llama.cpp logs the reason, then generic "failed to load model" lines: name the reason.
    const reason = problems.find((p) => p.includes("error loading model: "))?.replace(/^.*?error loading model: /, "") ?? problems[0];
    throw new EngineLoadError(`${what} "${path}": ${reason}`, { path, problems, cause: err });
  };

  let model: LlamaModel;
  try {
    model = await handle.llama.loadModel({
      modelPath: path,
      // On a GPU: as many layers as fit beside the slots' KV cache (`auto`), all, or a number.
      ...(handle.backend.gpu === false ? {} : { gpuLayers: gpuLayersOption(options.gpuLayers ?? "auto", options) }),
      ...(signal === undefined ? {} : { loadSignal: signal }),
    });
  } catch (err) {
    return fail("Cannot load model", err);
  }
  let context: LlamaContext;
  try {
    context = await model.createContext({
      contextSize: options.contextSize,
      sequences: options.slots,
      threads: options.threads,
      ...(signal === undefined ? {} : { createSignal: signal }),
    });
  } catch (err) {
    return fail(`Cannot create a context of ${options.contextSize} tokens × ${options.slots} slots for model`, err, model);
  }

  const metadata = model.fileInfo.metadata as { general?: { architecture?: string } };
  const info: EngineInfo = {
    fingerprint,
    contextSize: context.contextSize,
    slots: options.slots,
    trainContextLength: model.trainContextSize,
    parameters: validation.info.parameterCount,
    architecture: metadata.general?.architecture ?? validation.info.architecture,
    chatTemplate: validation.info.hasChatTemplate,
    backend: { ...handle.backend, gpuLayers: model.gpuLayers, threads: options.threads },
  };
  if (info.contextSize > info.trainContextLength) {
    logger.warn(
      { contextSize: info.contextSize, trainContextLength: info.trainContextLength },
      "Context is larger than the model was trained for",
    );
  }
  return { info, handle, model, context, logger, maxQueue: options.maxQueue, maxJsonStringLength, unsubscribeLog };
}

/** Logs what was loaded and on what, and warns about a build that did not load or threads that slow decoding. */
export function logLoaded(parts: EngineParts, chatWrapper: string | null, options: EngineOptions): void {
  const { info, handle, logger } = parts;
  const path = resolve(options.modelPath);
  const { backend, ...rest } = info;
  logger.info(
    { model: path, ...rest, ...backend, chatWrapper },
    `Model loaded on ${backend.gpu === false ? "the CPU" : `${backend.gpu} (${backend.gpuLayers} layers)`} with the ${backend.binary === "source" ? "source-built" : "prebuilt"} llama.cpp binary${backend.openmp ? " (OpenMP)" : ""}`,
  );
  if (backend.binary === "prebuilt" && handle.sourceBuild !== undefined && handle.sourceBuild.gpu === backend.gpu) {
    logger.warn(
      { sourceBuild: handle.sourceBuild.folder },
      "A source build of llama.cpp is there but did not load (see the log above): using the prebuilt binary",
    );
  }
  if (backend.gpu === false && !backend.openmp && options.threads > 1) {
    logger.warn(
      { threads: options.threads },
      "More than 1 thread on a llama.cpp binary without OpenMP decodes slower than 1: run `npm run build:engine` or set ATLAS_THREADS=1",
    );
  }
}
