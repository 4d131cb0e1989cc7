/**
 * Preloaded by the benchmark into a service process (`--import bench/probe/probe.ts`); talks
 * over the IPC channel the benchmark gave the process, and does nothing without one. The
 * services' own code is untouched.
 *
 * - **Heap** (`BENCH_PROBE_HEAP=1`): reports `process.memoryUsage()` every second and after
 *   every major GC. With `--expose-gc` and `BENCH_HEAP_GC_MS`, it also forces a full GC that
 *   often and reports the heap right after it: the live heap, what a leak would make grow.
 * - **CPU profile**: on `{type: "bench-profile", action: "start"}` it starts V8's sampling CPU
 *   profiler (the one `node --cpu-prof` uses) through `node:inspector`; on `action: "stop", file`
 *   it writes the `.cpuprofile` there and answers `{type: "bench-profile-done", file}`. So the
 *   profile covers the load window only, not start-up.
 *
 * @module
 */
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { constants, PerformanceObserver } from "node:perf_hooks";

type Kind = "sample" | "major" | "forced";

function send(message: unknown): void {
  if (process.send === undefined || !process.connected) return;
  try {
    process.send(message);
  } catch {
    // the benchmark went away
  }
}

function report(kind: Kind): void {
  const m = process.memoryUsage();
  send({
    type: "bench-heap",
    sample: { kind, t: Date.now(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, rss: m.rss, external: m.external },
  });
}

// Only in the service itself: node-llama-cpp forks helper processes with the same flags.
const isService = /services\/[^/]+\/src\/main\.ts$/.test(process.argv[1] ?? "");

if (process.send !== undefined && isService) {
  if (process.env.BENCH_PROBE_HEAP === "1") {
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const kind = ((entry as { detail?: unknown }).detail as { kind?: number } | undefined)?.kind;
        if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) report("major");
      }
    });
    observer.observe({ entryTypes: ["gc"] });
    setInterval(() => report("sample"), 1000).unref();
    const every = Number(process.env.BENCH_HEAP_GC_MS ?? 0);
    const gc = (globalThis as { gc?: () => void }).gc;
    if (every > 0 && gc !== undefined) {
      setInterval(() => {
        gc();
        report("forced");
      }, every).unref();
    }
  }

  let session: Session | undefined;
  process.on("message", (msg: { type?: string; action?: string; file?: string; intervalUs?: number }) => {
    if (msg?.type !== "bench-profile") return;
    void (async () => {
      try {
        if (msg.action === "start" && session === undefined) {
          session = new Session();
          session.connect();
          await session.post("Profiler.enable");
          await session.post("Profiler.setSamplingInterval", { interval: msg.intervalUs ?? 1000 });
          await session.post("Profiler.start");
          send({ type: "bench-profile-started" });
        } else if (msg.action === "stop" && session !== undefined && msg.file !== undefined) {
          const { profile } = await session.post("Profiler.stop");
          session.disconnect();
          session = undefined;
          await writeFile(msg.file, JSON.stringify(profile));
          send({ type: "bench-profile-done", file: msg.file });
        }
      } catch (err) {
        send({ type: "bench-profile-error", message: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
}
