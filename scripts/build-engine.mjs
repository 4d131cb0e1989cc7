#!/usr/bin/env node
/**
 * `npm run build:engine`: builds llama.cpp for the inference worker from the sources that
 * node-llama-cpp's npm package ships (`node_modules/node-llama-cpp/llama/gitRelease.bundle`, a
 * git bundle of the release its prebuilt binaries come from), offline, with OpenMP, through
 * node-llama-cpp's own CLI (`source download`: clone the bundle, apply its patches, compile with
 * cmake). The worker then loads this build instead of the prebuilt binary (which has no OpenMP
 * and decodes several times slower with 2 threads than with 1). See docs/adr/0012-engine-builds.md.
 *
 *   npm run build:engine                          # CPU, this machine's instruction set (~10-16 min on 2 cores)
 *   npm run build:engine -- --portable            # CPU, every x86-64 variant, chosen at load (images)
 *   npm run build:engine -- --gpu cuda            # CUDA (needs the CUDA toolkit)
 *   npm run build:engine -- --check               # is there a build, and does it load? (exit 1 if not)
 *   npm run build:engine -- --remove              # delete the build: the worker uses the prebuilt binary
 *
 * Options: `--gpu false|cuda|vulkan|metal` (default false), `--portable`, `--clean` (remove the
 * cloned sources and the build tree after a successful build, keeping the binaries: for images),
 * `--check`, `--remove`.
 *
 * Needs cmake, a C++ compiler, make and git (Debian: `apt-get install cmake g++ make git`).
 * The build goes to node_modules/node-llama-cpp/llama/localBuilds/<folder>/, and the options it
 * was built with to `localBuilds/atlas-engine.json`, which the worker reads
 * (services/inference-worker/src/llama.ts) to ask node-llama-cpp for exactly this build. A fresh
 * `npm ci` deletes both: the worker then falls back to the prebuilt binary.
 *
 * Plain JavaScript so that it runs before anything is compiled (and in the image's build stage).
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
/** The manifest's file name, in node-llama-cpp's `llama/localBuilds/` (read by llama.ts). */
const MANIFEST = "atlas-engine.json";
const CMAKE_ENV_PREFIX = "NODE_LLAMA_CPP_CMAKE_OPTION_";

const { values } = parseArgs({
  options: {
    gpu: { type: "string", default: "false" },
    portable: { type: "boolean", default: false },
    clean: { type: "boolean", default: false },
    check: { type: "boolean", default: false },
    remove: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});

if (values.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), "utf8").split("*/")[0]);
  process.exit(0);
}

const GPUS = ["false", "cuda", "vulkan", "metal"];
if (!GPUS.includes(values.gpu)) {
  console.error(`build-engine: --gpu must be one of ${GPUS.join(", ")} (got "${values.gpu}")`);
  process.exit(2);
}
const gpu = values.gpu === "false" ? false : values.gpu;

// node-llama-cpp as the worker resolves it (hoisted to the root, or in the worker's own node_modules).
let packageRoot;
try {
  const entry = createRequire(join(root, "services", "inference-worker", "package.json")).resolve("node-llama-cpp");
  packageRoot = dirname(dirname(entry));
} catch {
  console.error("build-engine: node-llama-cpp is not installed (run npm ci first)");
  process.exit(2);
}
const llamaDir = join(packageRoot, "llama");
const buildsDir = join(llamaDir, "localBuilds");
const manifestPath = join(buildsDir, MANIFEST);
const cli = join(packageRoot, "dist", "cli", "cli.js");
const say = (m) => console.error(`build-engine: ${m}`);

/** Loads the build the manifest names, as the worker would; returns what loaded. */
async function probe(manifest) {
  const { getLlama } = await import(pathToFileURL(join(packageRoot, "dist", "index.js")).href);
  const llama = await getLlama({
    gpu: manifest.gpu,
    build: "never",
    usePrebuiltBinaries: false,
    cmakeOptions: manifest.cmakeOptions,
    progressLogs: false,
    logger: () => {},
  });
  const result = { buildType: llama.buildType, gpu: llama.gpu, openmp: /OPENMP = 1/.test(llama.systemInfo), systemInfo: llama.systemInfo };
  await llama.dispose();
  return result;
}

function readManifest() {
  if (!existsSync(manifestPath)) return undefined;
  return JSON.parse(readFileSync(manifestPath, "utf8"));
}

if (values.remove) {
  const manifest = readManifest();
  if (manifest?.folder !== undefined) rmSync(join(buildsDir, manifest.folder), { recursive: true, force: true });
  rmSync(manifestPath, { force: true });
  say(manifest === undefined ? "no source build to remove" : `removed ${manifest.folder}: the worker uses the prebuilt binary`);
  process.exit(0);
}

if (values.check) {
  const manifest = readManifest();
  if (manifest === undefined) {
    say("no source build: the worker uses the prebuilt binary (npm run build:engine makes one)");
    process.exit(1);
  }
  try {
    const loaded = await probe(manifest);
    console.log(JSON.stringify({ ...manifest, loaded }, null, 2));
    process.exit(0);
  } catch (err) {
    say(
      `the source build in ${manifest.folder} does not load (${err instanceof Error ? err.message : String(err)}): the worker falls back to the prebuilt binary`,
    );
    process.exit(1);
  }
}

// Tools the compile needs; say what is missing before a long run fails halfway.
const has = (cmd) => spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
const missing = [
  has("cmake") ? null : "cmake",
  has("c++") || has("g++") || has("clang++") ? null : "a C++ compiler (g++)",
  has("make") || has("ninja") ? null : "make",
  has("git") ? null : "git",
].filter((x) => x !== null);
if (missing.length > 0) {
  say(`missing ${missing.join(", ")} (Debian: apt-get install cmake g++ make git)`);
  process.exit(2);
}
if (!existsSync(join(llamaDir, "gitRelease.bundle"))) {
  say(`node-llama-cpp's llama.cpp sources (${join(llamaDir, "gitRelease.bundle")}) are missing`);
  process.exit(2);
}

// The cmake options: OpenMP always (the point of this build). Native: -march=native, without
// AMX (VMs that report AMX without granting it die with SIGILL in ggml's AMX kernels; see
// bench/llama_server/build.sh). Portable: every x86-64 variant, chosen at load time, as the
// prebuilt binary does (for images built on one machine and run on another).
const ours = values.portable
  ? { GGML_OPENMP: "ON", GGML_NATIVE: "OFF", GGML_CPU_ALL_VARIANTS: "ON", GGML_BACKEND_DL: "ON" }
  : {
      GGML_OPENMP: "ON",
      GGML_NATIVE: "ON",
      GGML_AMX_TILE: "OFF",
      GGML_AMX_INT8: "OFF",
      GGML_AMX_BF16: "OFF",
      CMAKE_C_FLAGS: "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
      CMAKE_CXX_FLAGS: "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    };
if (!values.portable && process.arch !== "x64") {
  for (const key of ["CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]) delete ours[key];
}
// Options the caller set the node-llama-cpp way (NODE_LLAMA_CPP_CMAKE_OPTION_<NAME>) are kept and recorded.
const env = { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: "true" };
const cmakeOptions = {};
for (const [key, value] of Object.entries(process.env)) {
  if (key.startsWith(CMAKE_ENV_PREFIX) && key !== CMAKE_ENV_PREFIX && value !== undefined)
    cmakeOptions[key.slice(CMAKE_ENV_PREFIX.length)] = value;
}
Object.assign(cmakeOptions, ours);
for (const [key, value] of Object.entries(cmakeOptions)) env[CMAKE_ENV_PREFIX + key] = value;

const release = JSON.parse(readFileSync(join(llamaDir, "binariesGithubRelease.json"), "utf8")).release;
const flavour = values.portable ? "portable" : "native";
say(`building llama.cpp ${release} (${gpu === false ? "CPU" : gpu}, ${flavour}, OpenMP) from ${join(llamaDir, "gitRelease.bundle")}`);
say("~10-16 min on 2 cores (portable: several CPU variants, longer); node-llama-cpp's progress follows");
const started = performance.now();
// `source download` clones the bundle (offline: the bundle matches the release) and compiles.
const run = spawnSync(process.execPath, [cli, "source", "download", "--gpu", String(gpu), "--noUsageExample"], {
  cwd: root,
  env,
  stdio: "inherit",
});
const seconds = Math.round((performance.now() - started) / 1000);
if (run.status !== 0) {
  say(`failed after ${seconds} s (exit ${run.status ?? run.signal}); the worker keeps using the prebuilt binary`);
  process.exit(1);
}
const lastBuild = JSON.parse(readFileSync(join(llamaDir, "lastBuild.json"), "utf8"));
const manifest = {
  gpu,
  flavour,
  openmp: true,
  cmakeOptions,
  folder: lastBuild.folderName,
  release,
  node: process.version,
  builtAt: new Date().toISOString(),
  buildSeconds: seconds,
};
writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
if (values.clean) {
  // node-llama-cpp loads <folder>/Release/ (the addon, its libraries and build metadata) once
  // <folder>/buildDone.status is there; the rest is the cmake build tree.
  rmSync(join(llamaDir, "llama.cpp"), { recursive: true, force: true });
  const folder = join(buildsDir, manifest.folder);
  for (const entry of readdirSync(folder)) {
    if (entry !== "Release" && entry !== "buildDone.status") rmSync(join(folder, entry), { recursive: true, force: true });
  }
  say("removed the cloned sources (llama/llama.cpp) and the build tree (kept Release/)");
}

let loaded;
try {
  loaded = await probe(manifest);
} catch (err) {
  rmSync(manifestPath, { force: true });
  say(
    `built, but the build does not load (${err instanceof Error ? err.message : String(err)}); the worker keeps using the prebuilt binary`,
  );
  process.exit(1);
}
if (loaded.buildType !== "localBuild") {
  rmSync(manifestPath, { force: true });
  say(`built, but node-llama-cpp loaded its ${loaded.buildType} binary instead of it; the worker keeps using the prebuilt binary`);
  process.exit(1);
}
if (!loaded.openmp) say(`warning: the build has no OpenMP (is libgomp installed?): ${loaded.systemInfo}`);
say(`built in ${seconds} s: ${join(buildsDir, manifest.folder)} (${loaded.systemInfo.trim()})`);
say("the worker loads it from now on (its log says binary: source)");
