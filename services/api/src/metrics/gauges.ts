/**
 * The api instance's own gauges for `GET /metrics`, appended to the cluster's metrics that the
 * metrics service renders (`metrics.prometheus`): its circuit breakers, its admission and its
 * refusals, each labelled with the api instance. Every name is listed in `docs/metrics.md`.
 *
 * @module
 */
import { PromText } from "@atlas/service";

/** The api's own state (this api instance only). */
export interface ApiGauges {
  instance: string;
  breakers: readonly { name: string; state: "closed" | "open" | "half_open"; opened: number }[];
  admission: { running: number; queued: number; max: number };
  /** Refusals by reason (`admission_queue_full`, `rate_limit_session_requests`…). */
  refused: Record<string, number>;
}

const BREAKER_VALUE = { closed: 0, half_open: 1, open: 2 } as const;

/** Renders the api's own gauges: circuit breakers, admission, refusals. */
export function renderApiGauges(g: ApiGauges): string {
  return new PromText({ api: g.instance })
    .family(
      "atlas_circuit_breaker_state",
      "gauge",
      "Circuit breaker of a downstream service as this api sees it: 0 closed, 1 half-open, 2 open.",
      g.breakers.map((b) => ({ labels: { downstream: b.name }, value: BREAKER_VALUE[b.state] })),
    )
    .family(
      "atlas_circuit_breaker_opened_total",
      "counter",
      "Times a circuit breaker opened since this api started.",
      g.breakers.map((b) => ({ labels: { downstream: b.name }, value: b.opened })),
    )
    .family("atlas_api_requests_running", "gauge", "Generation requests this api runs now (of ATLAS_MAX_CONCURRENT).", [
      { value: g.admission.running },
    ])
    .family("atlas_api_requests_queued", "gauge", "Generation requests waiting for admission in this api.", [{ value: g.admission.queued }])
    .family("atlas_api_max_concurrent", "gauge", "ATLAS_MAX_CONCURRENT of this api.", [{ value: g.admission.max }])
    .family(
      "atlas_api_refused_total",
      "counter",
      "Requests this api refused with a 429 (rate limits) or a 503 (admission), by reason.",
      Object.entries(g.refused).map(([reason, value]) => ({ labels: { reason }, value })),
    )
    .toString();
}
