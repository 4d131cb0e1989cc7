/**
 * The api's circuit breakers, one per downstream service — `scheduler`, `persistence`,
 * `metrics` — and one per inference worker (`worker:<id>`, made on first use), each with the
 * half-open probe that fits it. Fallbacks while a breaker is open (ARCHITECTURE §3):
 *
 * | breaker | used by | while open |
 * |---|---|---|
 * | scheduler | `lease.ts` | queue-group dispatch without affinity, `x-atlas-degraded: scheduler` |
 * | persistence | `memory/*` | chat answers without recall (`x-atlas-degraded: memory`), appends stay durable; memory routes 503 |
 * | metrics | `metrics/routes.ts` | metrics routes 503; answers carry `x-atlas-degraded: metrics` |
 * | worker:&lt;id&gt; | `dispatch.ts` | the lease is given back and the request goes to the queue group |
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import type { Config } from "@atlas/config";
import { Health, MetricsQuery, SchedulerState, ServiceName } from "@atlas/contracts";
import type { Logger } from "@atlas/log";
import { type BreakerSnapshot, CircuitBreaker, type CircuitBreakerOptions } from "./breaker.ts";

/** Worker breakers kept at most (closed, quiet ones are dropped first). */
const MAX_WORKER_BREAKERS = 1024;
/** A worker whose probes have failed this long is forgotten (its breaker and its probes go). */
const FORGET_WORKER_MS = 60_000;
/** How long a probe waits for its answer. */
const PROBE_TIMEOUT_MS = 1000;

/** The api's breakers. */
export class Downstream {
  readonly scheduler: CircuitBreaker;
  readonly persistence: CircuitBreaker;
  readonly metrics: CircuitBreaker;
  readonly #workers = new Map<string, CircuitBreaker>();
  readonly #bus: Bus;
  readonly #base: Omit<CircuitBreakerOptions, "name" | "probe">;

  constructor(options: { bus: Bus; config: Config; log: Logger }) {
    const { bus, config, log } = options;
    this.#bus = bus;
    this.#base = {
      failureThreshold: config.ATLAS_BREAKER_FAILURES,
      openMs: config.ATLAS_BREAKER_OPEN_MS,
      onChange: (name, from, to) => {
        const line = { breaker: name, from, to };
        if (to === "open") log.warn(line, `Circuit breaker "${name}" opened: using its fallback`);
        else log.info(line, `Circuit breaker "${name}" is ${to.replace("_", "-")}`);
      },
    };
    this.scheduler = this.#make("scheduler", async () => {
      await bus.call(SchedulerState, {}, { timeoutMs: PROBE_TIMEOUT_MS });
    });
    this.persistence = this.#make("persistence", () => serviceAnswers(bus, ServiceName.persistence));
    this.metrics = this.#make("metrics", async () => {
      await bus.call(MetricsQuery, { window: "10s" }, { timeoutMs: PROBE_TIMEOUT_MS });
    });
  }

  /** The breaker of one worker (made on first use). */
  worker(id: string): CircuitBreaker {
    let b = this.#workers.get(id);
    if (b === undefined) {
      if (this.#workers.size >= MAX_WORKER_BREAKERS) this.#trimWorkers();
      let lastOk = Date.now();
      const breaker = this.#make(`worker:${id}`, async () => {
        try {
          const h = await this.#bus.call(
            Health,
            {},
            { params: { service: ServiceName.worker, instance: id }, timeoutMs: PROBE_TIMEOUT_MS },
          );
          if (h.state === "down") throw new Error(`Worker "${id}" reports down`);
          lastOk = Date.now();
        } catch (err) {
          // Gone for good (worker ids are per process): stop probing it.
          if (Date.now() - lastOk > FORGET_WORKER_MS && this.#workers.get(id) === breaker) {
            this.#workers.delete(id);
            breaker.close();
          }
          throw err;
        }
      });
      b = breaker;
      this.#workers.set(id, b);
    }
    return b;
  }

  /** Every breaker's state, services first. */
  snapshot(): BreakerSnapshot[] {
    const workers = [...this.#workers.values()].map((b) => b.snapshot()).sort((a, b) => a.name.localeCompare(b.name));
    return [this.scheduler.snapshot(), this.persistence.snapshot(), this.metrics.snapshot(), ...workers];
  }

  /** Stops every probe. */
  close(): void {
    for (const b of [this.scheduler, this.persistence, this.metrics, ...this.#workers.values()]) b.close();
  }

  #make(name: string, probe: () => Promise<unknown>): CircuitBreaker {
    return new CircuitBreaker({ ...this.#base, name, probe });
  }

  #trimWorkers(): void {
    for (const [id, b] of this.#workers) {
      const s = b.snapshot();
      if (s.state === "closed" && s.failures === 0) {
        b.close();
        this.#workers.delete(id);
      }
      if (this.#workers.size < MAX_WORKER_BREAKERS / 2) return;
    }
  }
}

/** Resolves when an instance of `service` in this cluster answers health and is not down. */
async function serviceAnswers(bus: Bus, service: string): Promise<void> {
  const found = await bus.discover({ service, timeoutMs: 200 });
  for (const info of found) {
    const h = await bus.call(Health, {}, { params: { service, instance: info.id }, timeoutMs: PROBE_TIMEOUT_MS }).catch(() => undefined);
    if (h !== undefined && h.state !== "down") return;
  }
  throw new Error(`No healthy "${service}" instance answers`);
}
