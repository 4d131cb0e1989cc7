/**
 * Every process the benchmark starts goes through here, so that none outlives it: children are
 * tracked by pid, stopped in reverse start order, and killed (SIGKILL) if the benchmark exits
 * any other way. Service children also get an IPC channel, and ATLAS services stop by
 * themselves when that channel closes (`libs/service`), as under the supervisor.
 *
 * @module
 */
import { type ChildProcess, type ForkOptions, fork, type SpawnOptions, spawn } from "node:child_process";
import { readFileSync } from "node:fs";

const live = new Map<number, ChildProcess>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once("exit", () => {
    for (const child of live.values()) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

/** Starts a process and tracks it until it exits. */
export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  hookExit();
  const child = spawn(command, args, options);
  track(child);
  return child;
}

/** Forks a Node child (an IPC channel included) and tracks it. */
export function forkTracked(module: string, args: readonly string[], options: ForkOptions): ChildProcess {
  hookExit();
  const child = fork(module, args, options);
  track(child);
  return child;
}

function track(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined) return;
  live.set(pid, child);
  child.once("exit", () => live.delete(pid));
}

/** Whether a child has exited. */
export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves when the child has exited. */
export function whenExited(child: ChildProcess): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Sends `signal`, then SIGKILL after `graceMs`; resolves once the child is gone. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM", graceMs = 8000): Promise<void> {
  if (exited(child)) return;
  child.kill(signal);
  const timer = setTimeout(() => {
    if (!exited(child)) child.kill("SIGKILL");
  }, graceMs);
  await whenExited(child);
  clearTimeout(timer);
}

/** Kills every tracked child at once (SIGKILL) and waits for them (bounded). */
export async function killAll(): Promise<void> {
  const children = [...live.values()];
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  await Promise.race([Promise.all(children.map(whenExited)), new Promise((r) => setTimeout(r, 3000))]);
}

/** Pids of children still running (for the end-of-run check). */
export function livePids(): number[] {
  return [...live.keys()];
}

/** Resident memory of a process from `/proc/<pid>/status`: current (VmRSS) and peak (VmHWM), in MiB. */
export function residentMemory(pid: number): { rssMiB: number; hwmMiB: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m").exec(text)?.[1] ?? Number.NaN);
    return { rssMiB: kb("VmRSS") / 1024, hwmMiB: kb("VmHWM") / 1024 };
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, in seconds, from `/proc/<pid>/stat`. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ")".
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return ticks / 100; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/**
 * Sends `message` to a bench child over IPC and resolves with the `result` of its answer of type
 * `answer`; an `{type: "error", message}` answer or no answer within `timeoutMs` rejects.
 */
export function askChild(child: ChildProcess, message: Record<string, unknown>, answer: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolveAnswer, reject) => {
    const timer = setTimeout(() => {
      child.off("message", onMessage);
      reject(new Error(`bench child did not answer ${answer} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (msg: { type?: string; message?: string; result?: unknown }) => {
      if (msg.type !== answer && msg.type !== "error") return;
      clearTimeout(timer);
      child.off("message", onMessage);
      if (msg.type === answer) resolveAnswer(msg.result);
      else reject(new Error(`bench child: ${msg.message}`));
    };
    child.on("message", onMessage);
    child.send(message);
  });
}
