/**
 * The embedded `nats-server` of `npm start`: loopback only, JetStream on with its store under
 * `ATLAS_DATA_DIR/nats`, port 4222 when free and an ephemeral port otherwise (read from the
 * server's own "Listening for client connections on" line).
 *
 * The server runs in its own process group, so a Ctrl-C on the terminal reaches the supervisor
 * and the services but not the server: the services drain while NATS is still up, and the
 * supervisor stops the server last. A pid file in the store lets the next start stop a server
 * that an earlier, killed supervisor left behind.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@atlas/log";

/** The port the embedded server tries first: NATS's default, what a service expects without `NATS_URL`. */
export const DEFAULT_NATS_PORT = 4222;

/** Raised when the `nats-server` binary cannot be found; its message says how to get one. */
export class NatsServerNotFoundError extends Error {
  override readonly name = "NatsServerNotFoundError";

  constructor(binary: string, options?: { cause?: unknown }) {
    super(
      [
        `Cannot start "${binary}": it is not installed or not on the PATH.`,
        "ATLAS needs a NATS server with JetStream. Any one of these works:",
        "  - install it: apt-get install -y nats-server (Debian, Ubuntu), or see https://docs.nats.io/running-a-nats-service/introduction/installation",
        "  - use a server you already run: NATS_URL=nats://host:4222 npm start",
        "  - run everything in containers: docker compose up",
      ].join("\n"),
      options,
    );
  }
}

/** Raised when `nats-server` starts but does not come up. */
export class NatsServerStartError extends Error {
  override readonly name = "NatsServerStartError";
}

/** Options for {@link startEmbeddedNats}. */
export interface EmbeddedNatsOptions {
  /** JetStream store folder (created when missing), e.g. `<ATLAS_DATA_DIR>/nats`. */
  storeDir: string;
  /** Port to try first; default {@link DEFAULT_NATS_PORT}. When taken, an ephemeral port is used. */
  port?: number;
  /** Binary to run; default `nats-server` on the PATH. */
  binary?: string;
  /** Where the server's own log lines go (warnings and errors at `warn`, the rest at `debug`). */
  log: Logger;
  /** How long to wait for the server to listen; default 10 s. */
  startTimeoutMs?: number;
}

/** A running embedded server. */
export interface EmbeddedNats {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly storeDir: string;
  /** Settles when the server process has exited, with its code and signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once {@link stop} or {@link kill} was called. */
  readonly stopping: boolean;
  /** Stops the server: SIGTERM, then SIGKILL after `killAfterMs` (default 3000). */
  stop(options?: { killAfterMs?: number }): Promise<void>;
  /** Sends SIGKILL at once (synchronous; for the last-resort exit path). */
  kill(): void;
}

/** Starts `nats-server -a 127.0.0.1 -p <port> -js -sd <storeDir>`, falling back to `-p -1` when the port is taken. */
export async function startEmbeddedNats(options: EmbeddedNatsOptions): Promise<EmbeddedNats> {
  const binary = options.binary ?? "nats-server";
  const port = options.port ?? DEFAULT_NATS_PORT;
  await mkdir(options.storeDir, { recursive: true });
  await stopLeftover(options.storeDir, options.log);
  try {
    return await launch(binary, port, options);
  } catch (err) {
    if (err instanceof PortTakenError && port !== -1) {
      options.log.info({ port }, `Port ${port} is taken by another process; starting nats-server on an ephemeral port`);
      return launch(binary, -1, options);
    }
    throw err;
  }
}

class PortTakenError extends Error {
  override readonly name = "PortTakenError";
}

const LISTENING = /Listening for client connections on [^\s]+:(\d+)/;

function pidFile(storeDir: string): string {
  return join(storeDir, "nats-server.pid");
}

async function launch(binary: string, port: number, options: EmbeddedNatsOptions): Promise<EmbeddedNats> {
  const { storeDir, log } = options;
  const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir, "-P", pidFile(storeDir)];
  const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    // A failed spawn emits "error" and never "exit".
    child.once("error", () => {
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
  });
  const listening = await waitForListening(child, binary, options.startTimeoutMs ?? 10_000);
  forwardLog(child, log);
  let stopping = false;
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    url: `nats://127.0.0.1:${listening}`,
    port: listening,
    pid: child.pid ?? -1,
    storeDir,
    exited,
    get stopping() {
      return stopping;
    },
    async stop(o = {}) {
      stopping = true;
      if (!alive()) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => {
        log.warn({ pid: child.pid }, "nats-server did not stop after SIGTERM; sending SIGKILL");
        child.kill("SIGKILL");
      }, o.killAfterMs ?? 3000);
      await exited;
      clearTimeout(timer);
    },
    kill() {
      stopping = true;
      if (alive()) child.kill("SIGKILL");
    },
  };
}

function waitForListening(child: ChildProcess, binary: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = "";
    const done = (fn: () => void) => {
      clearTimeout(timer);
      child.stderr?.removeListener("data", onData);
      child.removeListener("exit", onExit);
      child.removeListener("error", onError);
      fn();
    };
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      done(() => reject(new NatsServerStartError(`nats-server did not listen within ${timeoutMs} ms; its log:\n${text}`)));
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException) => {
      done(() =>
        reject(
          err.code === "ENOENT"
            ? new NatsServerNotFoundError(binary, { cause: err })
            : new NatsServerStartError(`Cannot start "${binary}": ${err.message}`, { cause: err }),
        ),
      );
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      done(() =>
        reject(
          /address already in use/i.test(text)
            ? new PortTakenError(text)
            : new NatsServerStartError(`nats-server exited with ${code ?? signal} before listening; its log:\n${text}`),
        ),
      );
    };
    const onData = (chunk: string) => {
      if (text.length < 20_000) text += chunk;
      const m = LISTENING.exec(text);
      if (m?.[1] !== undefined) {
        const port = Number(m[1]);
        done(() => resolve(port));
      }
    };
    child.once("error", onError);
    child.once("exit", onExit);
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", onData);
  });
}

/** Sends the server's log lines to our logger: problems at `warn`, the rest at `debug`. */
function forwardLog(child: ChildProcess, log: Logger): void {
  let partial = "";
  child.stderr?.on("data", (chunk: string) => {
    const lines = (partial + chunk).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line.trim() === "") continue;
      if (/\[(ERR|FTL|WRN)\]/.test(line)) log.warn({ nats_server: line.trim() }, "nats-server reported a problem");
      else log.debug({ nats_server: line.trim() }, "nats-server");
    }
  });
}

/**
 * Stops a `nats-server` that an earlier supervisor (killed before it could clean up) left
 * running on this store: two servers must never share one JetStream store.
 */
async function stopLeftover(storeDir: string, log: Logger): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(pidFile(storeDir), "utf8")).trim(), 10);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return;
  let cmdline: string;
  try {
    cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replaceAll("\0", " ");
  } catch {
    return; // not running (or no /proc): nothing to do
  }
  if (!cmdline.includes("nats-server") || !cmdline.includes(storeDir)) return;
  log.warn({ pid, storeDir }, `Stopping nats-server ${pid} that an earlier run left on "${storeDir}"`);
  signal(pid, "SIGTERM");
  for (let waited = 0; waited < 3000 && alive(pid); waited += 50) await sleep(50);
  if (alive(pid)) signal(pid, "SIGKILL");
  for (let waited = 0; waited < 2000 && alive(pid); waited += 50) await sleep(50);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
