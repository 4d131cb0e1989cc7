/**
 * Starts a real, isolated `nats-server` for one test file: loopback only, an ephemeral port
 * read from the server's own log line, JetStream on with a temporary store that is removed
 * when the server stops (also when the test failed). A cluster of them: `nats_cluster.ts`.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Options for {@link startNatsServer}. */
export interface NatsServerOptions {
  /** Path of the binary; default `NATS_SERVER_BIN` or `nats-server` on the PATH. */
  binary?: string;
  /** Enable JetStream (default true). */
  jetstream?: boolean;
  /** Extra configuration file text (accounts, users); written next to the store. */
  config?: string;
  /** Reuse this store folder instead of a fresh temporary one (restart tests). */
  storeDir?: string;
  /** Reuse this port (restart tests); default ephemeral. */
  port?: number;
  /** How long to wait for the server to listen; default 10 s. */
  startTimeoutMs?: number;
}

/** A running test server. */
export interface NatsServer extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after 3 s) and removes its store unless kept. */
  stop(options?: { keepStore?: boolean }): Promise<void>;
  /** Kills the server at once (SIGKILL), keeping its store, as a crash would. */
  kill(): Promise<void>;
  /**
   * Freezes the server (SIGSTOP: it keeps its connections but answers nothing) and resolves once
   * every thread has stopped — on a loaded machine that takes milliseconds, during which it still
   * answers.
   */
  pause(): Promise<void>;
  /** Lets a paused server run again (SIGCONT). */
  resume(): void;
  /** Permission violations the server logged so far (`Publish Violation - User "api", Subject "x"`). */
  violations(): string[];
}

/** Servers this process started and has not stopped: killed if the process exits first. */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** Starts a `nats-server` on an ephemeral loopback port with a temporary store. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const ownStore = options.storeDir === undefined;
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), "atlas-nats-")));
  const args = ["-a", "127.0.0.1", "-p", String(options.port ?? -1)];
  if (options.jetstream !== false) args.push("-js", "-sd", storeDir);
  if (options.config !== undefined) {
    const file = join(storeDir, "test-server.conf");
    await writeFile(file, options.config);
    args.push("-c", file);
  }
  const server = await spawnNatsServer(args, options).catch(async (err: unknown) => {
    if (ownStore) await rm(storeDir, { recursive: true, force: true });
    throw err;
  });
  const stopWith = async (signal: NodeJS.Signals, keepStore: boolean) => {
    await server.terminate(signal);
    if (ownStore && !keepStore) await rm(storeDir, { recursive: true, force: true });
  };
  return {
    url: `nats://127.0.0.1:${server.port}`,
    port: server.port,
    storeDir,
    pid: server.pid,
    stop: (o) => stopWith("SIGTERM", o?.keepStore ?? false),
    kill: () => stopWith("SIGKILL", true),
    pause: () => pauseProcess(server.pid),
    resume: () => process.kill(server.pid, "SIGCONT"),
    violations: () => [...server.violations],
    [Symbol.asyncDispose]: () => stopWith("SIGTERM", false),
  };
}

/**
 * Sends SIGSTOP and waits until each of the process's threads reads as stopped in `/proc`
 * (Linux; elsewhere it only sends the signal).
 */
async function pauseProcess(pid: number): Promise<void> {
  process.kill(pid, "SIGSTOP");
  const tasks = `/proc/${pid}/task`;
  const state = async (task: string) => {
    const stat = await readFile(`${tasks}/${task}/stat`, "utf8").catch(() => ") T"); // a thread that ended
    return stat.slice(stat.lastIndexOf(") ") + 2)[0];
  };
  const stopped = async () => {
    const ids = await readdir(tasks).catch(() => undefined);
    return ids === undefined || (await Promise.all(ids.map(state))).every((s) => s === "T" || s === "t");
  };
  const until = Date.now() + 5000;
  while (!(await stopped())) {
    if (Date.now() > until) throw new Error(`Process ${pid} did not stop within 5 s of SIGSTOP`);
    await sleep(1);
  }
}

/** @internal A started `nats-server` process (for {@link startNatsServer} and the cluster). */
export interface SpawnedNatsServer {
  readonly pid: number;
  /** The client port, from the server's log line. */
  readonly port: number;
  /** Permission violations it logged so far (the array grows). */
  readonly violations: string[];
  /** Settles when the process exited. */
  readonly exited: Promise<void>;
  /** Whether the process still runs. */
  running(): boolean;
  /** Sends `signal` (SIGTERM: then SIGKILL after 3 s) and waits for the exit. */
  terminate(signal: NodeJS.Signals): Promise<void>;
}

/** @internal Starts `nats-server` with `args` and resolves once it listens for clients. */
export async function spawnNatsServer(
  args: string[],
  options: { binary?: string; startTimeoutMs?: number } = {},
): Promise<SpawnedNatsServer> {
  const binary = options.binary ?? process.env.NATS_SERVER_BIN ?? "nats-server";
  const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  live.add(child);
  child.once("exit", () => live.delete(child));
  const port = await waitForPort(child, options.startTimeoutMs ?? 10_000).catch((err: unknown) => {
    child.kill("SIGKILL");
    throw err;
  });
  // Keep reading the server's log: permission violations are how a test sees a refused service.
  const violations: string[] = [];
  let partial = "";
  child.stderr?.on("data", (text: string) => {
    const lines = (partial + text).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) if (/Violation/.test(line) && violations.length < 1000) violations.push(line.trim());
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const exited = new Promise<void>((resolve) => {
    if (!running()) resolve();
    else child.once("exit", () => resolve());
  });
  return {
    pid: child.pid ?? -1,
    port,
    violations,
    exited,
    running,
    terminate: async (signal) => {
      if (!running()) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function waitForPort(child: ChildProcess, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => {
      reject(new Error(`nats-server did not listen within ${timeoutMs} ms; its log:\n${log}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(
        new Error(
          `Cannot start "nats-server": ${err.message}. Install it (Debian: apt-get install -y nats-server) or set NATS_SERVER_BIN.`,
          { cause: err },
        ),
      );
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code} before listening; its log:\n${log}`));
    });
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      if (log.length < 20_000) log += text;
      const m = /Listening for client connections on [^\s]+:(\d+)/.exec(log);
      if (m?.[1] !== undefined) {
        clearTimeout(timer);
        child.stderr?.removeAllListeners("data");
        resolve(Number(m[1]));
      }
    });
  });
}
