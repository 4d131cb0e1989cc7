/**
 * The lease load of the scheduler-at-scale scenario (`bench/scenarios/sched_scale.ts`): a bus
 * client of its own sends `SchedulerDispatch` requests — lease a slot and relay the generation
 * to its worker in one hop, as the api does without slot credits — from `concurrency` loops, for
 * `durationMs` after a warm-up, and times each one to its end frame. Each request is one lease
 * granted and given back (the worker releases it). It also counts the heartbeat traffic on the
 * bus while it runs.
 *
 * Protocol: `{type: "run", spec}` → `{type: "result", result}`.
 *
 * @module
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { AnyWorkerHeartbeat, ATLAS_VERSION, SchedulerDispatch } from "@atlas/contracts";
import { type Summary, summarize } from "../lib/stats.ts";

/** What to run. */
export interface DispatchLoadSpec {
  natsUrl: string;
  prefix: string;
  model: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

/** What it measured. */
export interface DispatchLoadResult {
  /** Leases (dispatches that ended) in the measured window. */
  count: number;
  errors: number;
  firstError: string | null;
  perSecond: number;
  latencyMs: Summary;
  heartbeatsPerSecond: number;
  heartbeatBytesPerSecond: number;
}

async function run(spec: DispatchLoadSpec): Promise<DispatchLoadResult> {
  const bus: NatsBus = await Bus.connect({
    servers: spec.natsUrl,
    prefix: spec.prefix,
    service: { name: "bench-dispatch", version: ATLAS_VERSION },
    discoverable: false,
  });
  let beats = 0;
  let beatBytes = 0;
  let counting = false;
  const sub = bus.nc.subscribe(AnyWorkerHeartbeat.subject(spec.prefix), {
    callback: (_e, m) => {
      if (!counting) return;
      beats += 1;
      beatBytes += m.data.length;
    },
  });
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  let measuring = false;
  let stop = false;
  let n = 0;
  const loop = async (lane: number) => {
    while (!stop) {
      const started = performance.now();
      try {
        const call = bus.callStream(
          SchedulerDispatch,
          {
            holder: bus.instance,
            tenant: "bench",
            generate: {
              request_id: `d${lane}-${n++}`,
              model: spec.model,
              session: null,
              messages: [{ role: "user", content: "x" }],
              sampling: { temperature: 0, top_p: 1, presence_penalty: 0, frequency_penalty: 0, stop: [] },
            },
          },
          { startTimeoutMs: 10_000, idleTimeoutMs: 10_000 },
        );
        for await (const _ of call) {
          // no chunks: the simulated worker answers with its end frame only
        }
        await call.result;
        if (measuring) latencies.push(performance.now() - started);
      } catch (err) {
        if (measuring) {
          errors += 1;
          firstError ??= err instanceof Error ? err.message : String(err);
        }
      }
    }
  };
  const lanes = Array.from({ length: spec.concurrency }, (_, i) => loop(i));
  await new Promise((r) => setTimeout(r, spec.warmupMs));
  measuring = true;
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, spec.durationMs));
  measuring = false;
  counting = false;
  const seconds = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all(lanes);
  sub.unsubscribe();
  await bus.close({ graceMs: 0 });
  return {
    count: latencies.length,
    errors,
    firstError,
    perSecond: latencies.length / seconds,
    latencyMs: summarize(latencies),
    heartbeatsPerSecond: beats / seconds,
    heartbeatBytesPerSecond: beatBytes / seconds,
  };
}

process.on("message", (msg: { type: string; spec: DispatchLoadSpec }) => {
  if (msg.type !== "run") return;
  run(msg.spec).then(
    (result) => process.send?.({ type: "result", result }),
    (err: unknown) => process.send?.({ type: "error", message: err instanceof Error ? err.message : String(err) }),
  );
});
