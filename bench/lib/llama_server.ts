/**
 * llama.cpp's own `llama-server`, the peer the benchmark compares with, measured in the same
 * run as ATLAS: built by the benchmark itself (`bench/llama_server/build.sh`, from the llama.cpp
 * release node-llama-cpp ships, cached outside the repository) with `--with-llama-server`, or any
 * binary `LLAMA_SERVER_BIN` names. Started with the same model, slots (`-np`), total context
 * (`-c` = slots × context per slot) and threads (`-t`) as ATLAS, on a free loopback port.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { openSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { readGgufHeader } from "@atlas/gguf";
import { exited, spawnTracked, stopChild } from "./proc.ts";
import { freePort, REPO_ROOT } from "./stack.ts";

/** The build script; see its header for the cache layout. */
export const BUILD_SCRIPT = join(REPO_ROOT, "bench", "llama_server", "build.sh");

/** How the build script configures llama.cpp (shown in the report). */
export const BUILD_FLAGS =
  "cmake Release, CPU only, -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF";

/**
 * Builds llama-server with `bench/llama_server/build.sh`, or reuses the cached build (waiting
 * for a build of the same folder that is already running); resolves with the binary's path.
 */
export async function ensureLlamaServer(log: (message: string) => void): Promise<string> {
  const child = spawn("bash", [BUILD_SCRIPT], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let path = "";
  child.stdout.setEncoding("utf8").on("data", (text: string) => {
    path += text;
  });
  createInterface({ input: child.stderr }).on("line", (line) => log(line));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  const bin = path.trim().split("\n").pop() ?? "";
  if (code !== 0 || bin === "") throw new Error(`bench/llama_server/build.sh failed (exit ${code})`);
  return bin;
}

/**
 * A `logit_bias` for llama-server requests that bans the model's raw high-byte tokens
 * (`<0x80>`…`<0xFF>`). The benchmark's random-weight models emit them, alone they are invalid
 * UTF-8, and llama-server's chat output parser then answers the whole request with a 500 ("does
 * not match the expected … format"; measured: about 4 in 10 replies of 128 tokens). ATLAS
 * serves those replies; banning 128 of the vocabulary's tokens costs llama-server nothing
 * measurable and keeps the token counts (`ignore_eos`) the same on both sides.
 */
export async function byteTokenBias(modelPath: string): Promise<Record<string, number>> {
  const header = await readGgufHeader(modelPath);
  const tokens = header.metadata["tokenizer.ggml.tokens"];
  const bias: Record<string, number> = {};
  if (Array.isArray(tokens)) {
    tokens.forEach((t, i) => {
      if (typeof t === "string" && /^<0x[89A-F][0-9A-F]>$/.test(t)) bias[String(i)] = -100;
    });
  }
  return bias;
}

/** A running llama-server. */
export interface LlamaServer {
  baseUrl: string;
  pid: number;
  args: string[];
  stop(): Promise<void>;
}

/** Starts llama-server and waits for `/health`. */
export async function startLlamaServer(options: {
  binary: string;
  modelPath: string;
  slots: number;
  ctxPerSlot: number;
  threads: number;
  logDir: string;
  label: string;
}): Promise<LlamaServer> {
  const port = await freePort();
  const args = [
    "-m",
    options.modelPath,
    "-np",
    String(options.slots),
    "-c",
    String(options.slots * options.ctxPerSlot),
    "-t",
    String(options.threads),
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
  ];
  const fd = openSync(join(options.logDir, `llama-server-${options.label}.log`), "a");
  const child: ChildProcess = spawnTracked(options.binary, args, { stdio: ["ignore", fd, fd] });
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited(child)) throw new Error(`llama-server exited during start (code ${child.exitCode}); see its log in ${options.logDir}`);
    try {
      if ((await fetch(`${baseUrl}/health`)).ok) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { baseUrl, pid: child.pid ?? -1, args, stop: () => stopChild(child, "SIGTERM", 5000) };
}
