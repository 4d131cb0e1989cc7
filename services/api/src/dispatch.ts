/**
 * Sends one sequence to a worker and streams it back. Until the scheduler hands out leases the
 * api dispatches through the workers' queue group (`worker.any.generate`); that path stays as
 * the fallback when the scheduler is unreachable.
 *
 * A worker that is at capacity (`overloaded`) or gone (`unavailable`) before it sent anything
 * is retried on another member of the queue group, a bounded number of times.
 *
 * @module
 */
import { type Bus, BusError } from "@atlas/bus";
import { ANY_WORKER, type GenerateEnd, type GenerateRequest, WorkerGenerate } from "@atlas/contracts";

/** Options for {@link generate}. */
export interface GenerateOptions {
  signal: AbortSignal;
  requestId: string;
  /** Called with each text chunk as it arrives. */
  onChunk?: (text: string) => void;
  /** Attempts when a worker is overloaded or gone before it started; default 3. */
  attempts?: number;
}

/** What one generated sequence came to. */
export interface GenerateOutcome {
  text: string;
  end: GenerateEnd;
}

/** Generates one sequence on any worker; resolves with its whole text and end message. */
export async function generate(bus: Bus, request: GenerateRequest, options: GenerateOptions): Promise<GenerateOutcome> {
  const attempts = options.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    let text = "";
    let started = false;
    const call = bus.callStream(WorkerGenerate, request, {
      params: { workerId: ANY_WORKER },
      signal: options.signal,
      requestId: options.requestId,
      startTimeoutMs: 10_000,
      idleTimeoutMs: 60_000,
    });
    try {
      for await (const chunk of call) {
        started = true;
        text += chunk.text;
        if (chunk.text !== "") options.onChunk?.(chunk.text);
      }
      return { text, end: await call.result };
    } catch (err) {
      const retry = !started && attempt < attempts && err instanceof BusError && (err.code === "overloaded" || err.code === "unavailable");
      if (!retry) throw err;
      await new Promise((r) => setTimeout(r, 25 * attempt));
    }
  }
}
