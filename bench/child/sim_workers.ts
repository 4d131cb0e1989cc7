/**
 * Simulated inference workers for the scheduler-at-scale scenario (`bench/scenarios/sched_scale.ts`):
 * real bus clients that speak the worker's protocol without an engine. Each heartbeats every
 * second (its slots, the highest fencing token it admitted per slot, as `heartbeat.ts` does),
 * serves `WorkerGenerate` on its own subject and answers at once: one end frame, with the lease's
 * `LeaseReleased` in the same write ahead of it, as a real worker ends a leased generation. So
 * they stand in for engines, not for the scheduler, whose work (leases, fencing, affinity,
 * reconciliation from heartbeats) is all real. Several workers share one NATS connection
 * (`perConnection`), as they would share nothing else.
 *
 * Protocol: `{type: "start", spec}` → `{type: "ready"}`; `{type: "stop"}` → `{type: "result", result}`.
 *
 * @module
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { ATLAS_VERSION, LeaseReleased, WorkerGenerate, WorkerHeartbeat } from "@atlas/contracts";

/** What to simulate. */
export interface SimWorkersSpec {
  natsUrl: string;
  prefix: string;
  model: string;
  workers: number;
  slots: number;
  /** Workers per NATS connection. */
  perConnection: number;
  /** Heartbeat period, ms (the real worker's: 1000). */
  intervalMs: number;
}

/** What the simulated workers did. */
export interface SimWorkersResult {
  generates: number;
  /** Requests that carried no lease (the queue-group fallback): 0 when every one went through the scheduler. */
  unleased: number;
  /** A lease whose token was not above what its slot admitted before: must be 0 (fencing). */
  staleTokens: number;
  heartbeats: number;
}

const buses: NatsBus[] = [];
const timers: NodeJS.Timeout[] = [];
const result: SimWorkersResult = { generates: 0, unleased: 0, staleTokens: 0, heartbeats: 0 };

async function start(spec: SimWorkersSpec): Promise<void> {
  const connections = Math.ceil(spec.workers / spec.perConnection);
  for (let c = 0; c < connections; c++) {
    const bus = await Bus.connect({
      servers: spec.natsUrl,
      prefix: spec.prefix,
      service: { name: "bench-sim-worker", version: ATLAS_VERSION },
      discoverable: false,
    });
    buses.push(bus);
    for (let w = c * spec.perConnection; w < Math.min(spec.workers, (c + 1) * spec.perConnection); w++) {
      const workerId = `sim-${w}`;
      const fencing = new Array<number>(spec.slots).fill(0);
      bus.serveStream(
        WorkerGenerate,
        async (req) => {
          result.generates += 1;
          const lease = req.lease;
          if (lease === undefined) result.unleased += 1;
          else {
            if (lease.fencing_token <= (fencing[lease.slot] ?? 0)) result.staleTokens += 1;
            fencing[lease.slot] = Math.max(fencing[lease.slot] ?? 0, lease.fencing_token);
            bus.publish(LeaseReleased, {
              lease_id: lease.lease_id,
              fencing_token: lease.fencing_token,
              worker_id: workerId,
              slot: lease.slot,
              tokens_in_slot: 0,
            });
          }
          return {
            finish_reason: "stop" as const,
            usage: { prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0 },
            worker_id: workerId,
            slot: lease?.slot ?? 0,
            fencing_token: lease?.fencing_token ?? null,
            timings: { queue_ms: 0, ttft_ms: 0, generation_ms: 0 },
          };
        },
        { params: { workerId }, queue: false },
      );
      const beat = () => {
        result.heartbeats += 1;
        bus.publish(
          WorkerHeartbeat,
          {
            worker_id: workerId,
            model: spec.model,
            fingerprint: "sim".padEnd(64, "0"),
            ctx_size: 1024,
            slots: fencing.map((token, slot) => ({ slot, busy: false, tokens: 0, session: null, fencing_token: token })),
            l2: [],
            draining: false,
            interval_ms: spec.intervalMs,
            sent_at: Date.now(),
          },
          { workerId },
        );
      };
      beat();
      // Spread the workers' beats over the period, as independent processes would be.
      const offset = Math.floor((w / spec.workers) * spec.intervalMs);
      timers.push(
        setTimeout(() => {
          beat();
          timers.push(setInterval(beat, spec.intervalMs));
        }, offset),
      );
    }
    await bus.rtt(); // the server has this connection's subscriptions
  }
}

process.on("message", (msg: { type: string; spec?: SimWorkersSpec }) => {
  if (msg.type === "start" && msg.spec !== undefined) {
    start(msg.spec).then(
      () => process.send?.({ type: "ready" }),
      (err: unknown) => process.send?.({ type: "error", message: err instanceof Error ? err.message : String(err) }),
    );
  }
  if (msg.type === "stop") {
    for (const t of timers) clearTimeout(t);
    void Promise.allSettled(buses.map((b) => b.close({ graceMs: 1000 }))).then(() => {
      process.send?.({ type: "result", result });
      process.exit(0);
    });
  }
});
