/**
 * The worker's metric events on `<prefix>.metrics.events.inference-worker` (contract:
 * `MetricEvents` in `libs/contracts/src/metrics.ts`; handler: `services/metrics/src/service.ts`):
 * one `generation` event per sequence (with the slot and the lease it ran under, from its
 * admission to its end), a `worker_stats` event with its slots every `intervalMs`, and `service`
 * events when it starts or cannot load its model. Publishing never waits on the network.
 *
 * @module
 */
import { type Bus, BusError, EventBatcher } from "@atlas/bus";
import { METRIC_BATCH_MAX, METRIC_BATCH_MS, type MetricEvent, MetricEvents, type MetricStatus, ServiceName } from "@atlas/contracts";
import type { EngineResult } from "./engine.ts";

/** What the metrics need to know of the engine's slots. */
export interface SlotSource {
  readonly freeSlots: number;
  readonly queued: number;
  readonly info: { readonly slots: number };
}

/** Options for {@link startWorkerMetrics}. */
export interface WorkerMetricsOptions {
  workerId: string;
  model: string;
  /** The engine, once loaded (no slots to report without it). */
  engine: SlotSource | undefined;
  /** Milliseconds between `worker_stats` events (`ATLAS_METRICS_INTERVAL`). */
  intervalMs: number;
  /** Why the model did not load, reported as a `service` error. */
  loadError?: string | undefined;
}

/** Where a sequence runs, for its `generation` event: which lease, since when. */
export interface Placement {
  /** The leased slot; without a lease the event names the slot the engine picked. */
  slot?: number | undefined;
  /** The lease's fencing token; absent without a lease. */
  fencingToken?: number | undefined;
  /** When the worker admitted the request (epoch ms); default: when `track` is called. */
  startedAt?: number | undefined;
}

/** The worker's metrics publisher. */
export interface WorkerMetrics {
  /** Runs one sequence and publishes its `generation` event, whether it succeeds or fails. */
  track<T extends EngineResult>(requestId: string, run: () => Promise<T>, placement?: Placement): Promise<T>;
  /** Stops the periodic stats and publishes the events still waiting. */
  stop(): void;
}

/** Starts publishing the worker's metrics. */
export function startWorkerMetrics(bus: Bus, options: WorkerMetricsOptions): WorkerMetrics {
  const { workerId, model, engine } = options;
  const origin = () => ({ service: ServiceName.worker, instance: bus.instance, ts: Date.now() });
  // One message per METRIC_BATCH_MS for all of this worker's events, not one per sequence.
  const events = new EventBatcher(bus, MetricEvents, {
    params: { service: ServiceName.worker },
    intervalMs: METRIC_BATCH_MS,
    maxItems: METRIC_BATCH_MAX,
  });
  const publish = (e: MetricEvent) => events.push(e);
  const slots = () =>
    engine === undefined
      ? { slots: 0, free_slots: 0, queued: 0 }
      : { slots: engine.info.slots, free_slots: engine.freeSlots, queued: engine.queued };

  publish({ type: "service", ...origin(), event: "started", detail: `worker ${workerId}` });
  if (options.loadError !== undefined) {
    publish({ type: "service", ...origin(), event: "error", detail: `Cannot load model: ${options.loadError}`.slice(0, 1000) });
  }
  const timer =
    engine === undefined
      ? undefined
      : setInterval(() => publish({ type: "worker_stats", ...origin(), worker_id: workerId, model, ...slots() }), options.intervalMs);
  timer?.unref();

  return {
    async track<T extends EngineResult>(requestId: string, run: () => Promise<T>, placement: Placement = {}): Promise<T> {
      const startedAt = placement.startedAt ?? Date.now();
      const generation = (status: MetricStatus, end: EngineResult | undefined, errorCode: string | null) =>
        publish({
          type: "generation",
          ...origin(),
          worker_id: workerId,
          model,
          request_id: requestId.slice(0, 200),
          status,
          error_code: errorCode,
          finish_reason: end?.finish_reason ?? null,
          tokens: {
            prompt: end?.usage.prompt_tokens ?? 0,
            completion: end?.usage.completion_tokens ?? 0,
            cached: end?.usage.cached_tokens ?? 0,
          },
          latency_ms: {
            queue: end?.timings.queue_ms ?? 0,
            ttft: end?.timings.ttft_ms ?? 0,
            generation: end?.timings.generation_ms ?? 0,
          },
          slot: placement.slot ?? end?.slot ?? null,
          fencing_token: placement.fencingToken ?? null,
          started_at: startedAt,
          ...slots(),
        });
      let end: T;
      try {
        end = await run();
      } catch (err) {
        const e = BusError.from(err);
        generation(e.code === "cancelled" ? "cancelled" : "error", undefined, e.code);
        throw err;
      }
      generation("ok", end, null);
      return end;
    },
    stop() {
      clearInterval(timer);
      events.close();
    },
  };
}
