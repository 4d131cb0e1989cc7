/**
 * Sends the sequences of one request to workers and streams them back.
 *
 * With the scheduler up, each group of `batch_size` sequences leases its slots at once (all or
 * nothing), the first sequence carrying the session for KV affinity, and each sequence goes to
 * its leased slot (`worker.<id>.generate`). With the scheduler unreachable the request falls
 * back to the workers' queue group (`worker.any.generate`), without affinity, and the response
 * says so (`x-atlas-degraded: scheduler`).
 *
 * On the fallback path a worker that is at capacity (`overloaded`) or gone (`unavailable`)
 * before it sent anything is retried on another member of the queue group, a bounded number of
 * times.
 *
 * Circuit breakers (`downstream.ts`): the scheduler's guards the lease calls; each worker's
 * guards the calls to its own subject — while a worker's breaker is open, a lease on it is
 * given back at once and the sequence goes to the queue group. A worker that dies mid-stream is
 * noticed within a second (the bus's liveness probe) and the stream ends with an error event.
 *
 * @module
 */
import { type Bus, BusError } from "@atlas/bus";
import { ANY_WORKER, type CacheStrategy, type GenerateEnd, type GenerateRequest, type Lease, WorkerGenerate } from "@atlas/contracts";
import { isUnreachable } from "./breaker.ts";
import type { Downstream } from "./downstream.ts";
import { acquireLeases, keepRenewed, releaseLease, sessionKey } from "./lease.ts";

/** What one generated sequence came to. */
export interface GenerateOutcome {
  text: string;
  end: GenerateEnd;
  /** The lease it ran under (absent on the fallback path). */
  lease?: Lease;
}

/** How a request's sequences are placed. */
export interface Placement {
  tenant: string;
  sessionId: string | undefined;
  strategy: CacheStrategy;
  /** Sequences leased together (all or nothing); default 1. */
  batchSize: number;
}

/** Options for {@link runSequences}. */
export interface RunOptions {
  signal: AbortSignal;
  requestId: string;
  placement: Placement;
  /** Called with each text chunk as it arrives, by sequence index. */
  onChunk?: (index: number, text: string) => void;
  /** Called when one sequence ends, by index. */
  onEnd?: (index: number, outcome: GenerateOutcome) => void;
  /** Called once if the request runs degraded (scheduler unreachable). */
  onDegraded?: (what: "scheduler") => void;
  /** Called with the ms each group of sequences waited for its leases (metrics). */
  onLease?: (ms: number) => void;
  /** The api's circuit breakers; without them every downstream is always tried. */
  breakers?: Downstream;
}

/** Runs every sequence of a request; resolves with their outcomes in order. */
export async function runSequences(bus: Bus, jobs: GenerateRequest[], options: RunOptions): Promise<GenerateOutcome[]> {
  const { placement } = options;
  const size = Math.max(1, placement.batchSize);
  const outcomes: GenerateOutcome[] = new Array(jobs.length);
  const groups: number[][] = [];
  for (let i = 0; i < jobs.length; i += size) groups.push(Array.from({ length: Math.min(size, jobs.length - i) }, (_, k) => i + k));
  let degraded = false;

  await Promise.all(
    groups.map(async (group) => {
      const first = group[0] ?? 0;
      const leaseStart = performance.now();
      const leases = await acquireLeases(
        bus,
        {
          requestId: options.requestId,
          tenant: placement.tenant,
          model: jobs[first]?.model ?? "",
          sessionId: first === 0 ? placement.sessionId : undefined,
          count: group.length,
          strategy: placement.strategy,
          signal: options.signal,
        },
        options.breakers?.scheduler,
      );
      options.onLease?.(performance.now() - leaseStart);
      if (leases === undefined && !degraded) {
        degraded = true;
        options.onDegraded?.("scheduler");
      }
      await Promise.all(
        group.map(async (index, k) => {
          const job = jobs[index] as GenerateRequest;
          const lease = leases?.[k];
          const session = index === 0 && placement.sessionId !== undefined ? sessionKey(placement.tenant, placement.sessionId) : null;
          const outcome = await generateOne(bus, { ...job, session }, lease, {
            signal: options.signal,
            requestId: options.requestId,
            onChunk: (text) => options.onChunk?.(index, text),
            breakers: options.breakers,
          });
          outcomes[index] = outcome;
          options.onEnd?.(index, outcome);
        }),
      );
    }),
  );
  return outcomes;
}

/** Generates one sequence on its leased slot, or on any worker when there is no lease. */
async function generateOne(
  bus: Bus,
  request: GenerateRequest,
  lease: Lease | undefined,
  options: { signal: AbortSignal; requestId: string; onChunk: (text: string) => void; breakers?: Downstream | undefined },
): Promise<GenerateOutcome> {
  if (lease === undefined) return generateAnywhere(bus, request, options);
  const scheduler = options.breakers?.scheduler;
  const attempt = options.breakers?.worker(lease.worker_id).attempt();
  if (options.breakers !== undefined && attempt === undefined) {
    // The leased worker's breaker is open: give the slot back and use any other worker.
    releaseLease(bus, lease, 0, scheduler);
    return generateAnywhere(bus, request, options);
  }
  const stopRenewing = keepRenewed(bus, lease, scheduler);
  let end: GenerateEnd | undefined;
  const started = { value: false };
  try {
    const leased = { ...request, lease: { lease_id: lease.lease_id, fencing_token: lease.fencing_token, slot: lease.slot } };
    const outcome = await stream(bus, leased, lease.worker_id, options, started);
    attempt?.success();
    end = outcome.end;
    return { ...outcome, lease };
  } catch (err) {
    if (isUnreachable(err) && !options.signal.aborted) attempt?.failure();
    else if (options.signal.aborted) attempt?.release();
    else attempt?.success();
    // The leased worker is gone (killed before the scheduler noticed): serve the request on
    // any other worker rather than fail it; the scheduler declares the worker dead on its own.
    if (!started.value && err instanceof BusError && err.code === "unavailable" && !options.signal.aborted) {
      return generateAnywhere(bus, request, options);
    }
    throw err;
  } finally {
    stopRenewing();
    // The slot keeps the session's tokens for its next turn; a sessionless slot keeps nothing.
    const kept = end !== undefined && request.session != null ? end.usage.prompt_tokens + end.usage.completion_tokens : 0;
    releaseLease(bus, lease, kept, scheduler);
  }
}

async function generateAnywhere(
  bus: Bus,
  request: GenerateRequest,
  options: { signal: AbortSignal; requestId: string; onChunk: (text: string) => void },
  attempts = 3,
): Promise<GenerateOutcome> {
  for (let attempt = 1; ; attempt++) {
    const started = { value: false };
    try {
      return await stream(bus, request, ANY_WORKER, options, started);
    } catch (err) {
      const retry =
        !started.value && attempt < attempts && err instanceof BusError && (err.code === "overloaded" || err.code === "unavailable");
      if (!retry) throw err;
      await new Promise((r) => setTimeout(r, 25 * attempt));
    }
  }
}

async function stream(
  bus: Bus,
  request: GenerateRequest,
  workerId: string,
  options: { signal: AbortSignal; requestId: string; onChunk: (text: string) => void },
  started = { value: false },
): Promise<GenerateOutcome> {
  let text = "";
  const call = bus.callStream(WorkerGenerate, request, {
    params: { workerId },
    signal: options.signal,
    requestId: options.requestId,
    startTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
  });
  for await (const chunk of call) {
    started.value = true;
    text += chunk.text;
    if (chunk.text !== "") options.onChunk(chunk.text);
  }
  return { text, end: await call.result };
}
