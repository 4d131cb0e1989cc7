/**
 * Sends the sequences of one request to workers and streams them back.
 *
 * The common case, one sequence per lease, is one hop: the api sends `SchedulerDispatch` and
 * the scheduler leases a slot (session affinity) and relays the request to that worker, which
 * streams straight back to the api's inbox and gives the lease back itself when it ends
 * (docs/adr/0008-request-path.md). A sessionless sequence goes without the scheduler when the
 * api holds a slot credit (`credits.ts`), and so does a session's turn when the credit's slot
 * holds that session (or the session is new): straight to the worker that keeps it, under its
 * lease; a credit the worker no longer keeps is refused before anything runs, and the sequence
 * is dispatched as usual. A group of `batch_size` > 1 sequences leases its slots at
 * once (all or nothing, `LeaseAcquire`), the first sequence carrying the session, and each
 * sequence goes to its leased slot (`worker.<id>.generate`). With the scheduler unreachable the
 * request falls back to the workers' queue group (`worker.any.generate`), without affinity, and
 * the response says so (`x-atlas-degraded: scheduler`).
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
import { type Bus, BusError, type StreamCall } from "@atlas/bus";
import {
  ANY_WORKER,
  type CacheStrategy,
  type GenerateChunk,
  type GenerateEnd,
  type GenerateRequest,
  type Lease,
  SchedulerDispatch,
  sessionKey,
  type TokenLogprob,
  WorkerGenerate,
} from "@atlas/contracts";
import { isUnreachable } from "./breaker.ts";
import type { Credit, Credits } from "./credits.ts";
import type { Downstream } from "./downstream.ts";
import { acquireLeases, askScheduler, LEASE_TTL_MS, releaseLease } from "./lease.ts";

/** What one generated sequence came to. */
export interface GenerateOutcome {
  text: string;
  /** The tokens' log-probabilities, when the request asked for them (`GenerateRequest.logprobs`). */
  logprobs?: TokenLogprob[];
  end: GenerateEnd;
  /** The lease it ran under, when the api acquired it itself (batches); see `end.fencing_token`. */
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
  /** Called with each chunk of text (and its tokens' logprobs) as it arrives, by sequence index. */
  onChunk?: (index: number, chunk: GenerateChunk) => void;
  /** Called when one sequence ends, by index. */
  onEnd?: (index: number, outcome: GenerateOutcome) => void;
  /** Called once if the request runs degraded (scheduler unreachable). */
  onDegraded?: (what: "scheduler") => void;
  /** Called with the ms each group of sequences waited for its leases (metrics). */
  onLease?: (ms: number) => void;
  /** The api's circuit breakers; without them every downstream is always tried. */
  breakers?: Downstream;
  /** The api's slot credits; without them every sequence is dispatched by the scheduler. */
  credits?: Credits;
}

/** Runs every sequence of a request; resolves with their outcomes in order. */
export async function runSequences(bus: Bus, jobs: GenerateRequest[], options: RunOptions): Promise<GenerateOutcome[]> {
  const { placement } = options;
  const size = Math.max(1, placement.batchSize);
  const outcomes: GenerateOutcome[] = new Array(jobs.length);
  const groups: number[][] = [];
  for (let i = 0; i < jobs.length; i += size) groups.push(Array.from({ length: Math.min(size, jobs.length - i) }, (_, k) => i + k));
  let degraded = false;

  const markDegraded = () => {
    if (degraded) return;
    degraded = true;
    options.onDegraded?.("scheduler");
  };

  await Promise.all(
    groups.map(async (group) => {
      const first = group[0] ?? 0;
      if (group.length === 1) {
        const job = jobs[first] as GenerateRequest;
        const session = first === 0 && placement.sessionId !== undefined ? sessionKey(placement.tenant, placement.sessionId) : null;
        const outcome = await dispatchOne(bus, { ...job, session, cache_strategy: placement.strategy }, options, {
          onChunk: (chunk) => options.onChunk?.(first, chunk),
          degrade: markDegraded,
        });
        outcomes[first] = outcome;
        options.onEnd?.(first, outcome);
        return;
      }
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
      if (leases === undefined) markDegraded();
      await Promise.all(
        group.map(async (index, k) => {
          const job = jobs[index] as GenerateRequest;
          const lease = leases?.[k];
          const session = index === 0 && placement.sessionId !== undefined ? sessionKey(placement.tenant, placement.sessionId) : null;
          const outcome = await generateOne(bus, { ...job, session, cache_strategy: placement.strategy }, lease, {
            signal: options.signal,
            requestId: options.requestId,
            onChunk: (chunk) => options.onChunk?.(index, chunk),
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

/**
 * One sequence in one hop: the scheduler leases a slot and relays the request to its worker,
 * which streams back here. Asked again like an acquire (`askScheduler`), also after a stale
 * lease refused by the worker (`conflict`); served by the queue group when no scheduler answers.
 */
async function dispatchOne(
  bus: Bus,
  request: GenerateRequest,
  options: RunOptions,
  hooks: { onChunk: (chunk: GenerateChunk) => void; degrade: () => void },
): Promise<GenerateOutcome> {
  const { placement } = options;
  const target = { signal: options.signal, requestId: options.requestId, onChunk: hooks.onChunk };
  const { credits } = options;
  const session = request.session ?? null;
  // This api holds every slot of the model as a credit: a sessionless request waits for one of
  // them rather than ask the scheduler, which has none to give (and would take one away).
  const credit =
    credits?.take(request.model, session, request.session_fresh === true) ??
    (session === null && credits?.full(request.model) === true
      ? await credits.wait(request.model, placement.tenant, options.signal)
      : undefined);
  if (credits !== undefined && credit !== undefined) {
    const outcome = await onCredit(bus, request, credit, credits, { ...target, breakers: options.breakers });
    if (outcome !== undefined) return outcome;
  }
  const started = { value: false };
  const asked = credits?.ask(request.model) === true;
  let outcome: GenerateOutcome | undefined;
  try {
    outcome = await askScheduler(
      bus,
      {
        signal: options.signal,
        requestId: request.request_id,
        breaker: options.breakers?.scheduler,
        retry: ["conflict"],
        // Once the worker streams, a failure is the generation's own (as on a leased slot).
        final: () => started.value,
      },
      (waitMs) => {
        const call = bus.callStream(
          SchedulerDispatch,
          {
            holder: bus.instance,
            tenant: placement.tenant,
            strategy: placement.strategy,
            wait_ms: waitMs,
            ttl_ms: LEASE_TTL_MS,
            credit: asked,
            generate: request,
          },
          { signal: options.signal, requestId: options.requestId, startTimeoutMs: waitMs + 2000, idleTimeoutMs: 60_000 },
        );
        return consume(call, target, started);
      },
    );
  } finally {
    credits?.settle(request.model, asked, outcome === undefined ? null : keptCredit(outcome.end), session);
  }
  if (outcome !== undefined) return outcome;
  // Nobody answers the dispatch subject (no scheduler, or a leased worker that just died).
  hooks.degrade();
  return generateAnywhere(bus, request, target);
}

/** The credit a worker kept at the end of a generation, if any. */
function keptCredit(end: GenerateEnd): Credit | null {
  return end.credit === null ? null : { worker_id: end.worker_id, ...end.credit };
}

/**
 * One sequence under a slot credit, straight to the worker that keeps it. Resolves
 * `undefined` when the credit cannot serve it before anything ran (the worker no longer keeps
 * it, is gone, or its breaker is open): the caller dispatches it as usual.
 */
async function onCredit(
  bus: Bus,
  request: GenerateRequest,
  credit: Credit,
  credits: Credits,
  options: { signal: AbortSignal; requestId: string; onChunk: (chunk: GenerateChunk) => void; breakers?: Downstream | undefined },
): Promise<GenerateOutcome | undefined> {
  const attempt = options.breakers?.worker(credit.worker_id).attempt();
  if (options.breakers !== undefined && attempt === undefined) {
    credits.settle(request.model, true, null);
    return undefined;
  }
  const session = request.session ?? null;
  const started = { value: false };
  const lease = { lease_id: credit.lease_id, fencing_token: credit.fencing_token, slot: credit.slot, keep: true };
  try {
    const outcome = await stream(bus, { ...request, lease }, credit.worker_id, options, started);
    attempt?.success();
    credits.settle(request.model, true, keptCredit(outcome.end), session);
    return outcome;
  } catch (err) {
    credits.settle(request.model, true, null);
    if (isUnreachable(err) && !options.signal.aborted) attempt?.failure();
    else if (options.signal.aborted) attempt?.release();
    else attempt?.success();
    const refused = err instanceof BusError && ["conflict", "unavailable", "cancelled", "not_found"].includes(err.code);
    if (refused && !started.value && !options.signal.aborted) return undefined;
    throw err;
  }
}

/** Generates one sequence on its leased slot, or on any worker when there is no lease. */
async function generateOne(
  bus: Bus,
  request: GenerateRequest,
  lease: Lease | undefined,
  options: { signal: AbortSignal; requestId: string; onChunk: (chunk: GenerateChunk) => void; breakers?: Downstream | undefined },
): Promise<GenerateOutcome> {
  if (lease === undefined) return generateAnywhere(bus, request, options);
  const scheduler = options.breakers?.scheduler;
  const attempt = options.breakers?.worker(lease.worker_id).attempt();
  if (options.breakers !== undefined && attempt === undefined) {
    // The leased worker's breaker is open: give the slot back and use any other worker.
    releaseLease(bus, lease, 0, scheduler);
    return generateAnywhere(bus, request, options);
  }
  // While the worker runs the generation its heartbeats extend the lease, and it releases the
  // lease itself when the generation ends; the api gives back only a lease the worker never saw.
  const started = { value: false };
  try {
    const leased = { ...request, lease: { lease_id: lease.lease_id, fencing_token: lease.fencing_token, slot: lease.slot } };
    const outcome = await stream(bus, leased, lease.worker_id, options, started);
    started.value = true; // it ended on the worker (even without a chunk): the worker releases it
    attempt?.success();
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
    if (!started.value) releaseLease(bus, lease, 0, scheduler);
  }
}

async function generateAnywhere(
  bus: Bus,
  request: GenerateRequest,
  options: { signal: AbortSignal; requestId: string; onChunk: (chunk: GenerateChunk) => void },
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

function stream(
  bus: Bus,
  request: GenerateRequest,
  workerId: string,
  options: { signal: AbortSignal; requestId: string; onChunk: (chunk: GenerateChunk) => void },
  started = { value: false },
): Promise<GenerateOutcome> {
  const call = bus.callStream(WorkerGenerate, request, {
    params: { workerId },
    signal: options.signal,
    requestId: options.requestId,
    startTimeoutMs: 10_000,
    idleTimeoutMs: 60_000,
  });
  return consume(call, options, started);
}

/** Reads a generation stream to its end, passing text on as it arrives. */
async function consume(
  call: StreamCall<GenerateChunk, GenerateEnd>,
  options: { onChunk: (chunk: GenerateChunk) => void },
  started: { value: boolean },
): Promise<GenerateOutcome> {
  let text = "";
  let logprobs: TokenLogprob[] | undefined;
  for await (const chunk of call) {
    started.value = true;
    text += chunk.text;
    if (chunk.logprobs !== undefined) {
      logprobs ??= [];
      for (const e of chunk.logprobs) logprobs.push(e);
    }
    if (chunk.text !== "" || chunk.tool_calls !== undefined) options.onChunk(chunk);
  }
  const end = await call.result;
  return logprobs === undefined ? { text, end } : { text, logprobs, end };
}
