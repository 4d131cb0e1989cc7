/**
 * The conditions of a run: machine, CPU, versions.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, freemem, hostname, release, totalmem } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "./stack.ts";

/** What the run ran on. */
export interface MachineInfo {
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  freeMemoryGiB: number;
  kernel: string;
  os: string;
  node: string;
  npm: string;
  natsServer: string;
  nodeLlamaCpp: string;
  llamaCppRelease: string | null;
  /** The llama.cpp binary the engine loads: `npm run build:engine`'s source build when present (its flavour), else the prebuilt one. */
  engineBinary: string;
  autocannon: string;
  fastify: string;
  gitCommit: string | null;
  gitDirty: boolean | null;
  host: string;
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(REPO_ROOT, "node_modules", name, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}

function run(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { cwd: REPO_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

/** Collects the machine and version facts. */
export function machineInfo(): MachineInfo {
  const cpuinfo = (() => {
    try {
      return readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return "";
    }
  })();
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "";
  const simd = ["avx512f", "avx2", "avx", "fma", "f16c"].filter((f) => flags.split(" ").includes(f));
  const osRelease = (() => {
    try {
      return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "?";
    } catch {
      return "?";
    }
  })();
  let llamaCppRelease: string | null = null;
  try {
    const b = JSON.parse(
      readFileSync(join(REPO_ROOT, "node_modules", "node-llama-cpp", "llama", "binariesGithubRelease.json"), "utf8"),
    ) as {
      release?: string;
    };
    llamaCppRelease = b.release ?? null;
  } catch {
    // not recorded
  }
  // The manifest `npm run build:engine` writes (services/inference-worker/src/llama.ts reads the same file).
  let engineBinary = "prebuilt CPU binary";
  try {
    const m = JSON.parse(
      readFileSync(join(REPO_ROOT, "node_modules", "node-llama-cpp", "llama", "localBuilds", "atlas-engine.json"), "utf8"),
    ) as { gpu?: unknown; flavour?: unknown };
    if (m.gpu === false) engineBinary = `source-built by npm run build:engine (${String(m.flavour ?? "native")}, OpenMP)`;
  } catch {
    // no source build: the prebuilt binary
  }
  const status = run("git", ["status", "--porcelain"]);
  return {
    cpuModel: `${cpus()[0]?.model ?? "?"}${simd.length > 0 ? ` (${simd.join(", ")})` : ""}`,
    cpus: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    freeMemoryGiB: Math.round((freemem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    os: osRelease,
    node: process.version,
    npm: run("npm", ["--version"]) ?? "?",
    natsServer: run("nats-server", ["--version"]) ?? "?",
    nodeLlamaCpp: packageVersion("node-llama-cpp"),
    llamaCppRelease,
    engineBinary,
    autocannon: packageVersion("autocannon"),
    fastify: packageVersion("fastify"),
    gitCommit: run("git", ["rev-parse", "--short", "HEAD"]),
    gitDirty: status === null ? null : status.length > 0,
    host: hostname(),
  };
}
