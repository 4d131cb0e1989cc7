/**
 * One node-llama-cpp `Llama` per process (per thread count, GPU choice and binary), shared by
 * every engine in it.
 *
 * node-llama-cpp routes llama.cpp's native log to the logger of the *last* `Llama` created, so
 * per-engine loggers cannot be told apart at the source. Instead every `Llama` made here logs to
 * one dispatcher, and whoever needs the log (an engine's logger, a model load that wants the
 * reason it failed) subscribes with {@link onLlamaLog}.
 *
 * Which binary: node-llama-cpp never compiles or downloads here (`build: "never"`). It loads the
 * source build `npm run build:engine` made (scripts/build-engine.mjs, with OpenMP) when there is
 * one for the GPU type it settles on, else its prebuilt binary (no OpenMP). The script records
 * the cmake options it built with in `localBuilds/atlas-engine.json`; node-llama-cpp finds a
 * local build by those options, so they are passed back here. See docs/adr/0012-engine-builds.md.
 *
 * Always an explicit `maxThreads`: on the prebuilt CPU binary more threads than needed collapse
 * decode speed (docs/configuration.md), and node-llama-cpp's default is 4 whatever the core count.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { getLlama, type Llama, type LlamaGpuType, LlamaLogLevel } from "node-llama-cpp";

/** A log line from llama.cpp. */
export interface LlamaLogLine {
  readonly level: LlamaLogLevel;
  readonly message: string;
}

/** The GPU backend asked for: node-llama-cpp's `gpu` option (`false`: CPU only; `auto`: the best one found, else the CPU). */
export type GpuChoice = "auto" | "cuda" | "vulkan" | "metal" | false;

/** Which llama.cpp binary to load: the source build when there is one (`auto`), or only the one named. */
export type BinaryChoice = "auto" | "prebuilt" | "source";

/** What `npm run build:engine` built (its manifest, `localBuilds/atlas-engine.json`). */
export interface SourceBuild {
  readonly gpu: LlamaGpuType;
  /** `native` (this machine's instruction set) or `portable` (every x86-64 variant, chosen at load). */
  readonly flavour: string;
  readonly cmakeOptions: Readonly<Record<string, string>>;
  /** Its folder under node-llama-cpp's `llama/localBuilds/`. */
  readonly folder: string;
  readonly release: string;
  readonly builtAt: string;
}

/** What was loaded. */
export interface LlamaBackend {
  /** The GPU backend llama.cpp runs on (`false`: the CPU). */
  readonly gpu: LlamaGpuType;
  /** `source`: built here by `npm run build:engine`; `prebuilt`: node-llama-cpp's npm binary. */
  readonly binary: "prebuilt" | "source";
  /** Whether llama.cpp's CPU threads run on OpenMP (the source build) or its own thread pool (the prebuilt binary). */
  readonly openmp: boolean;
  /** The llama.cpp release of the binary. */
  readonly release: string;
}

/** Options for {@link acquireLlama}. */
export interface LlamaOptions {
  /** CPU threads (llama.cpp's `maxThreads`). */
  threads: number;
  /** Default `false`. */
  gpu?: GpuChoice;
  /** Default `auto`. */
  binary?: BinaryChoice;
}

/** A held reference to the shared `Llama`; `release` disposes it when the last holder lets go. */
export interface LlamaHandle {
  readonly llama: Llama;
  readonly backend: LlamaBackend;
  /** The source build on disk, loaded or not (absent: none was made). */
  readonly sourceBuild: SourceBuild | undefined;
  release(): Promise<void>;
}

type Sink = (line: LlamaLogLine) => void;
type Loaded = { llama: Llama; backend: LlamaBackend; sourceBuild: SourceBuild | undefined };

const sinks = new Set<Sink>();
const shared = new Map<string, { loaded: Promise<Loaded>; refs: number }>();

/** The name of the manifest `scripts/build-engine.mjs` writes next to the builds. */
export const SOURCE_BUILD_MANIFEST = "atlas-engine.json";

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

/** node-llama-cpp's `llama/localBuilds/` folder, where source builds go. */
export function localBuildsDir(): string {
  const entry = createRequire(import.meta.url).resolve("node-llama-cpp"); // <package>/dist/index.js
  return join(dirname(dirname(entry)), "llama", "localBuilds");
}

/**
 * The source build `npm run build:engine` made, when its manifest and its folder are there;
 * undefined otherwise (the prebuilt binary is used). Never throws: a damaged manifest counts as none.
 */
export function readSourceBuild(dir: string = localBuildsDir()): SourceBuild | undefined {
  try {
    const manifest = JSON.parse(readFileSync(join(dir, SOURCE_BUILD_MANIFEST), "utf8")) as Partial<SourceBuild>;
    const { gpu, folder, cmakeOptions } = manifest;
    if (typeof folder !== "string" || folder === "" || typeof cmakeOptions !== "object" || cmakeOptions === null) return undefined;
    if (gpu !== false && gpu !== "cuda" && gpu !== "vulkan" && gpu !== "metal") return undefined;
    if (!existsSync(join(dir, folder))) return undefined;
    return {
      gpu,
      folder,
      cmakeOptions: Object.fromEntries(Object.entries(cmakeOptions).map(([k, v]) => [k, String(v)])),
      flavour: String(manifest.flavour ?? "native"),
      release: String(manifest.release ?? ""),
      builtAt: String(manifest.builtAt ?? ""),
    };
  } catch {
    return undefined;
  }
}

/** Refuses a GPU type this platform cannot have (node-llama-cpp would silently turn it into `auto`). */
function checkPlatform(gpu: GpuChoice): void {
  if (gpu === "metal" && process.platform !== "darwin") {
    throw new Error(`GPU "metal" needs macOS (this is ${process.platform}): use "cuda", "vulkan", "auto" or false`);
  }
  if (gpu === "cuda" && process.platform === "darwin" && process.arch !== "x64") {
    throw new Error(`GPU "cuda" is not available on Apple silicon: use "metal", "auto" or false`);
  }
}

async function load(threads: number, gpu: GpuChoice, binary: BinaryChoice): Promise<Loaded> {
  checkPlatform(gpu);
  const sourceBuild = readSourceBuild();
  if (binary === "source" && sourceBuild === undefined) {
    throw new Error("No source build of llama.cpp here (run `npm run build:engine`)");
  }
  let llama: Llama;
  try {
    llama = await getLlama({
      gpu,
      maxThreads: threads,
      // Use a local source build or the prebuilt binary; never compile or download at run time.
      build: "never",
      // A local build is found by the cmake options it was built with: ask for the source build's
      // (none: only a plain `node-llama-cpp source build` would match, then the prebuilt binary).
      cmakeOptions: binary === "prebuilt" ? {} : { ...sourceBuild?.cmakeOptions },
      usePrebuiltBinaries: binary !== "source",
      logLevel: LlamaLogLevel.warn,
      logger: dispatch,
      progressLogs: false,
    });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const what = binary === "source" ? `the source build (${sourceBuild?.folder})` : "llama.cpp";
    throw new Error(
      gpu === false || gpu === "auto"
        ? `Cannot load ${what}: ${reason}`
        : `Cannot load ${what} with GPU "${gpu}": no ${gpu} binary works on this machine (no ${gpu} device or driver?): ${reason}`,
      { cause: err },
    );
  }
  const loaded: LlamaBackend = {
    gpu: llama.gpu,
    binary: llama.buildType === "localBuild" ? "source" : "prebuilt",
    openmp: /\bOPENMP = 1\b/.test(llama.systemInfo),
    release: llama.llamaCppRelease.release,
  };
  if (binary !== "auto" && loaded.binary !== binary) {
    await llama.dispose();
    throw new Error(`Asked for the ${binary} llama.cpp binary but node-llama-cpp loaded its ${llama.buildType} one`);
  }
  return { llama, backend: loaded, sourceBuild };
}

/**
 * Takes a reference to the process's `Llama` for these options, creating it on first use.
 *
 * @throws {Error} when no binary for the asked GPU type loads (`gpu: "cuda"` without CUDA), or
 * `binary: "source"` without a source build.
 */
export async function acquireLlama(options: LlamaOptions | number): Promise<LlamaHandle> {
  const { threads, gpu = false, binary = "auto" } = typeof options === "number" ? { threads: options } : options;
  const key = `${threads}/${String(gpu)}/${binary}`;
  let entry = shared.get(key);
  if (entry === undefined) {
    entry = { loaded: load(threads, gpu, binary), refs: 0 };
    shared.set(key, entry);
  }
  entry.refs++;
  const current = entry;
  let loaded: Loaded;
  try {
    loaded = await current.loaded;
  } catch (err) {
    current.refs--;
    if (shared.get(key) === current) shared.delete(key);
    throw err;
  }
  let released = false;
  return {
    llama: loaded.llama,
    backend: loaded.backend,
    sourceBuild: loaded.sourceBuild,
    release: async () => {
      if (released) return;
      released = true;
      if (--current.refs > 0) return;
      if (shared.get(key) === current) shared.delete(key);
      await loaded.llama.dispose();
    },
  };
}
