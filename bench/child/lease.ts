/**
 * Lease cost, measured as the api pays it: a bus client of its own (one NATS connection, like
 * the api's) calls `LeaseAcquire` then `LeaseRelease` against the running scheduler, one pair at
 * a time, and times each call. For scale, it also times a bare NATS request/reply to an echo
 * responder on the same server (the transport's floor).
 *
 * Protocol: `{type: "run", spec}` → `{type: "result", result}`.
 *
 * @module
 */
import { Bus, type NatsBus } from "@atlas/bus";
import { ATLAS_VERSION, LeaseAcquire, LeaseRelease } from "@atlas/contracts";
import type { LeaseResult, LeaseSpec } from "../lib/lease.ts";
import { summarize } from "../lib/stats.ts";

process.on("message", (msg: { type: string; spec: LeaseSpec }) => {
  if (msg.type !== "run") return;
  const { spec } = msg;
  void (async () => {
    let bus: NatsBus | undefined;
    try {
      bus = await Bus.connect({
        servers: spec.natsUrl,
        prefix: spec.prefix,
        service: { name: "bench-lease", version: ATLAS_VERSION },
        discoverable: false,
      });
      const acquire: number[] = [];
      const release: number[] = [];
      const pair: number[] = [];
      const echo: number[] = [];
      const residency: Record<string, number> = {};
      for (let i = 0; i < spec.warmup + spec.iterations; i++) {
        const t0 = performance.now();
        const { leases } = await bus.call(
          LeaseAcquire,
          {
            request_id: `bench-lease-${i}`,
            holder: bus.instance,
            tenant: "bench",
            model: spec.model,
            session: spec.withSession ? `bench/lease-${i % 4}` : null,
            count: 1,
            strategy: "adaptive",
            wait_ms: 5000,
            ttl_ms: 30_000,
          },
          { timeoutMs: 6000 },
        );
        const t1 = performance.now();
        const lease = leases[0]!;
        await bus.call(
          LeaseRelease,
          { lease_id: lease.lease_id, fencing_token: lease.fencing_token, tokens_in_slot: 0 },
          { timeoutMs: 6000 },
        );
        const t2 = performance.now();
        if (i < spec.warmup) continue;
        acquire.push(t1 - t0);
        release.push(t2 - t1);
        pair.push(t2 - t0);
        residency[lease.residency] = (residency[lease.residency] ?? 0) + 1;
      }
      const subject = `benchecho.${crypto.randomUUID().slice(0, 8)}`;
      const sub = bus.nc.subscribe(subject, {
        callback: (_e, m) => {
          m.respond(m.data);
        },
      });
      const payload = new TextEncoder().encode(JSON.stringify({ request_id: "x".repeat(40), holder: bus.instance, tenant: "bench" }));
      for (let i = 0; i < spec.warmup + spec.iterations; i++) {
        const t0 = performance.now();
        await bus.nc.request(subject, payload, { timeout: 5000 });
        if (i >= spec.warmup) echo.push(performance.now() - t0);
      }
      sub.unsubscribe();
      const result: LeaseResult = {
        iterations: spec.iterations,
        acquireMs: summarize(acquire),
        releaseMs: summarize(release),
        pairMs: summarize(pair),
        natsEchoMs: summarize(echo),
        residency,
      };
      await bus.close();
      process.send?.({ type: "result", result }, () => process.exit(0));
    } catch (err) {
      await bus?.close().catch(() => {});
      process.send?.({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.exit(1));
    }
  })();
});
