/**
 * One supervised child process: spawn it, watch it, restart it with exponential backoff when it
 * crashes, and stop it on request. A child that exits with 78 (`EX_CONFIG`, a configuration
 * error) is not restarted: restarting cannot fix its environment.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Logger } from "@atlas/log";
import { nodeArgsFor, serviceV8Args } from "./runtime.ts";

/** Exit code of a service that found its configuration invalid (`loadConfigOrExit`). */
export const EXIT_CONFIG = 78;

/** Where a child is in its life. */
export const ChildState = {
  /** Spawned, not yet confirmed up. */
  starting: "starting",
  /** Up: it said so over IPC, or it has stayed alive for `readyAfterMs`. */
  running: "running",
  /** Exited; waiting for its restart. */
  backoff: "backoff",
  /** Not running and not going to be restarted. */
  stopped: "stopped",
} as const;
/** Where a child is in its life. */
export type ChildState = (typeof ChildState)[keyof typeof ChildState];

/** What to run. */
export interface ChildSpec {
  /** Service name (`metrics`, `inference-worker`, …). */
  name: string;
  /** Instance label, for workers their worker id; shown in status and logs. */
  instance?: string;
  /** Absolute path of the script: JavaScript runs with plain `node`, TypeScript through tsx (`nodeArgsFor`). */
  script: string;
  /** Extra environment of this child only (a worker's `ATLAS_WORKER_ID`). */
  env?: Record<string, string>;
}

/** Restart timing. */
export interface BackoffOptions {
  /** Delay before the first restart, in ms. */
  initialMs: number;
  /** Largest delay, in ms; the delay doubles up to it. */
  maxMs: number;
  /** A child that ran at least this long before exiting starts again from `initialMs`. */
  resetAfterMs: number;
}

/** 250 ms doubling to 30 s; reset after 30 s of running. */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 30_000, resetAfterMs: 30_000 };

/** The delay before restart number `failures` (1-based) of a crash series. */
export function backoffDelayMs(failures: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const exp = Math.max(0, Math.min(failures - 1, 30));
  return Math.min(options.maxMs, options.initialMs * 2 ** exp);
}

/** How a child last exited. */
export interface ChildExit {
  code: number | null;
  signal: string | null;
  /** ISO time of the exit. */
  at: string;
}

/** A child as the supervisor's health reports it. */
export interface ChildStatus {
  name: string;
  /** Worker id, or null for single-instance services. */
  instance: string | null;
  /** Pid of the running process, or null. */
  pid: number | null;
  state: ChildState;
  /** How many times it was restarted after an exit. */
  restarts: number;
  last_exit: ChildExit | null;
  /** ISO time the current (or last) process was spawned, or null before the first spawn. */
  started_at: string | null;
}

/** Options for {@link SupervisedChild}. */
export interface SupervisedChildOptions {
  spec: ChildSpec;
  /** Working directory (the repository root). */
  cwd: string;
  /** The environment of each spawn, read at every (re)start. */
  env: () => NodeJS.ProcessEnv;
  log: Logger;
  backoff?: BackoffOptions;
  /** A child still alive after this long counts as running; default 1000 ms. */
  readyAfterMs?: number;
  /** Called when the child exits with {@link EXIT_CONFIG}; it is not restarted. */
  onConfigError?: (child: SupervisedChild, exit: ChildExit) => void;
}

/** One service process under supervision. */
export class SupervisedChild {
  readonly spec: ChildSpec;
  readonly label: string;
  readonly #options: SupervisedChildOptions;
  readonly #backoff: BackoffOptions;
  #proc: ChildProcess | undefined;
  #state: ChildState = ChildState.stopped;
  #restarts = 0;
  #failures = 0;
  #lastExit: ChildExit | null = null;
  #startedAt: Date | null = null;
  #timer: NodeJS.Timeout | undefined;
  #stopping = false;
  #exitWaiters: (() => void)[] = [];

  constructor(options: SupervisedChildOptions) {
    this.#options = options;
    this.spec = options.spec;
    this.label = options.spec.instance === undefined ? options.spec.name : `${options.spec.name}[${options.spec.instance}]`;
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
  }

  /** Pid of the running process, if any. */
  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  /** The current state. */
  get state(): ChildState {
    return this.#state;
  }

  /** Spawns the child. */
  start(): void {
    if (this.#stopping || this.#proc !== undefined) return;
    this.#spawn();
  }

  /** This child as health reports it. */
  status(): ChildStatus {
    return {
      name: this.spec.name,
      instance: this.spec.instance ?? null,
      pid: this.#proc?.pid ?? null,
      state: this.#state,
      restarts: this.#restarts,
      last_exit: this.#lastExit,
      started_at: this.#startedAt?.toISOString() ?? null,
    };
  }

  /** Stops restarting it and sends SIGTERM; resolves when the process has exited. */
  stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    const proc = this.#proc;
    if (proc === undefined) {
      this.#state = ChildState.stopped;
      return Promise.resolve();
    }
    const gone = new Promise<void>((resolve) => this.#exitWaiters.push(resolve));
    proc.kill("SIGTERM");
    return gone;
  }

  /** Stops restarting it and sends SIGKILL at once (synchronous). */
  kill(): void {
    this.#stopping = true;
    clearTimeout(this.#timer);
    this.#proc?.kill("SIGKILL");
  }

  /** Resolves when no process of this child is running (immediately if none is). */
  whenExited(): Promise<void> {
    if (this.#proc === undefined) return Promise.resolve();
    return new Promise((resolve) => this.#exitWaiters.push(resolve));
  }

  #spawn(): void {
    const { spec, cwd, log } = this.#options;
    const env: NodeJS.ProcessEnv = { ...this.#options.env(), ...spec.env };
    const proc = spawn(process.execPath, [...nodeArgsFor(spec.script), ...serviceV8Args(spec.name), spec.script], {
      cwd,
      env,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.#proc = proc;
    this.#state = ChildState.starting;
    this.#startedAt = new Date();
    const ready = setTimeout(() => this.#markRunning(proc), this.#options.readyAfterMs ?? 1000);
    proc.on("message", (msg: unknown) => {
      // A service may say it is up as soon as it is; the timer above covers those that do not.
      if (typeof msg === "object" && msg !== null && (msg as { type?: unknown }).type === "ready") this.#markRunning(proc);
    });
    let handled = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      if (handled) return;
      handled = true;
      clearTimeout(ready);
      this.#onExit(proc, code, signal);
    };
    proc.once("exit", onExit);
    proc.on("error", (err) => {
      // A spawn failure emits "error" and never "exit"; other errors (a failed kill or send) are logged.
      if (proc.pid === undefined) {
        log.error({ err, child: this.label }, `Cannot spawn "${this.label}"`);
        onExit(null, null);
      } else {
        log.warn({ err, child: this.label }, `Child "${this.label}" reported an error`);
      }
    });
    if (proc.pid !== undefined)
      log.info({ child: this.label, pid: proc.pid, restarts: this.#restarts }, `Started "${this.label}" (pid ${proc.pid})`);
  }

  #markRunning(proc: ChildProcess): void {
    if (this.#proc === proc && this.#state === ChildState.starting) this.#state = ChildState.running;
  }

  #onExit(proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const { log } = this.#options;
    const exit: ChildExit = { code, signal, at: new Date().toISOString() };
    const ranMs = Date.now() - (this.#startedAt?.getTime() ?? Date.now());
    this.#lastExit = exit;
    if (this.#proc === proc) this.#proc = undefined;
    const waiters = this.#exitWaiters;
    this.#exitWaiters = [];
    const how = signal === null ? `code ${code}` : `signal ${signal}`;
    if (this.#stopping) {
      this.#state = ChildState.stopped;
      log.info({ child: this.label, pid: proc.pid, code, signal }, `"${this.label}" stopped (${how})`);
    } else if (code === EXIT_CONFIG) {
      this.#state = ChildState.stopped;
      log.error(
        { child: this.label, pid: proc.pid, code },
        `"${this.label}" exited with code ${EXIT_CONFIG} (configuration error); not restarting it`,
      );
      this.#options.onConfigError?.(this, exit);
    } else {
      if (ranMs >= this.#backoff.resetAfterMs) this.#failures = 0;
      this.#failures += 1;
      const delayMs = backoffDelayMs(this.#failures, this.#backoff);
      this.#state = ChildState.backoff;
      log.warn(
        { child: this.label, pid: proc.pid, code, signal, ran_ms: ranMs, restarts: this.#restarts, delay_ms: delayMs },
        `"${this.label}" exited with ${how}; restarting in ${delayMs} ms`,
      );
      this.#timer = setTimeout(() => {
        if (this.#stopping) return;
        this.#restarts += 1;
        this.#spawn();
      }, delayMs);
    }
    for (const w of waiters) w();
  }
}
