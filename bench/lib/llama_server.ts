/**
 * llama.cpp's own `llama-server`, the peer the benchmark compares with when `LLAMA_SERVER_BIN`
 * names a binary: started with the same model, slots (`-np`), total context (`-c` = slots ×
 * context per slot) and threads (`-t`) as ATLAS, on a free loopback port.
 *
 * @module
 */
import type { ChildProcess } from "node:child_process";
import { openSync } from "node:fs";
import { join } from "node:path";
import { exited, spawnTracked, stopChild } from "./proc.ts";
import { freePort } from "./stack.ts";

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
