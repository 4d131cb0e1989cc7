/**
 * One node-llama-cpp `Llama` per process (per thread count), shared by every engine in it.
 *
 * node-llama-cpp routes llama.cpp's native log to the logger of the *last* `Llama` created, so
 * per-engine loggers cannot be told apart at the source. Instead every `Llama` made here logs to
 * one dispatcher, and whoever needs the log (an engine's logger, a model load that wants the
 * reason it failed) subscribes with {@link onLlamaLog}.
 *
 * Always `gpu: false` and an explicit `maxThreads`: on the prebuilt CPU binary more threads than
 * needed collapse decode speed (docs/configuration.md), and the default is 4 whatever the core count.
 *
 * @module
 */
import { getLlama, type Llama, LlamaLogLevel } from "node-llama-cpp";

/** A log line from llama.cpp. */
export interface LlamaLogLine {
  readonly level: LlamaLogLevel;
  readonly message: string;
}

/** A held reference to the shared `Llama`; `release` disposes it when the last holder lets go. */
export interface LlamaHandle {
  readonly llama: Llama;
  release(): Promise<void>;
}

type Sink = (line: LlamaLogLine) => void;

const sinks = new Set<Sink>();
const shared = new Map<number, { llama: Promise<Llama>; refs: number }>();

function dispatch(level: LlamaLogLevel, message: string): void {
  const line = { level, message: message.trimEnd() };
  for (const sink of sinks) {
    try {
      sink(line);
    } catch {
      // A log sink must never break llama.cpp's logging.
    }
  }
}

/** Subscribes to llama.cpp's log (warnings and errors); returns the unsubscribe function. */
export function onLlamaLog(sink: Sink): () => void {
  sinks.add(sink);
  return () => sinks.delete(sink);
}

/** Takes a reference to the process's `Llama` for `threads` threads, creating it on first use. */
export async function acquireLlama(threads: number): Promise<LlamaHandle> {
  let entry = shared.get(threads);
  if (entry === undefined) {
    entry = {
      llama: getLlama({
        gpu: false,
        maxThreads: threads,
        // Use a local source build or the prebuilt binary; never compile or download at run time.
        build: "never",
        logLevel: LlamaLogLevel.warn,
        logger: dispatch,
        progressLogs: false,
      }),
      refs: 0,
    };
    shared.set(threads, entry);
  }
  entry.refs++;
  const current = entry;
  let llama: Llama;
  try {
    llama = await current.llama;
  } catch (err) {
    current.refs--;
    if (shared.get(threads) === current) shared.delete(threads);
    throw err;
  }
  let released = false;
  return {
    llama,
    release: async () => {
      if (released) return;
      released = true;
      if (--current.refs > 0) return;
      if (shared.get(threads) === current) shared.delete(threads);
      await llama.dispose();
    },
  };
}
