/**
 * The lease cost: what `lease.acquire` + `lease.release` add to a request, measured by a bus
 * client of its own against a running scheduler (`bench/child/lease.ts`), next to a bare NATS
 * request/reply on the same server.
 *
 * @module
 */
import { type BenchContext, type ScenarioResult, table } from "../lib/context.ts";
import { type LeaseResult, runLease } from "../lib/lease.ts";
import { startBenchStack } from "../lib/stack.ts";
import { fmt, roundSummary, type Summary } from "../lib/stats.ts";

/** Runs the lease-cost measurement. */
export async function leaseScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const { slots } = ctx.settings;
  const iterations = ctx.quick ? 300 : 2000;
  ctx.log(`lease: ${iterations} acquire + release pairs, without and with a session`);
  const stack = await startBenchStack(ctx, "lease");
  let plain: LeaseResult;
  let session: LeaseResult;
  try {
    const base = { natsUrl: stack.natsUrl, prefix: stack.prefix, model: tiny.id, iterations, warmup: 200 };
    plain = await runLease({ ...base, withSession: false });
    session = await runLease({ ...base, withSession: true });
  } finally {
    await stack.stop();
  }
  const row = (label: string, s: Summary) => [label, fmt(s.p50, 3), fmt(s.p95, 3), fmt(s.p99, 3), fmt(s.mean, 3)];
  const markdown = [
    `${iterations.toLocaleString("en-US")} sequential acquire → release pairs (after 200 warm-up pairs) by a separate bus client against an idle stack (1 worker, ${slots} slots), timed client side in ms. The scheduler persists each granted lease in JetStream KV before it answers, and deletes it on release without waiting.`,
    "",
    table(
      ["call", "p50", "p95", "p99", "mean"],
      [
        row("lease.acquire (no session)", plain.acquireMs),
        row("lease.release (no session)", plain.releaseMs),
        row("**acquire + release (no session)**", plain.pairMs),
        row("lease.acquire (session, affinity)", session.acquireMs),
        row("lease.release (session)", session.releaseMs),
        row("**acquire + release (session)**", session.pairMs),
        row("bare NATS request/reply (echo)", plain.natsEchoMs),
      ],
    ),
    "",
    `On a request, only \`acquire\` is on the critical path before generation starts (${fmt(plain.acquireMs.p50, 2)} ms p50); \`release\` is sent after the response without being awaited, but it is CPU on the api, NATS and the scheduler all the same. Session residency seen: ${Object.entries(
      session.residency,
    )
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}.`,
  ].join("\n");
  return {
    name: "lease",
    title: "Lease cost",
    data: {
      iterations,
      plain: {
        ...plain,
        acquireMs: roundSummary(plain.acquireMs),
        releaseMs: roundSummary(plain.releaseMs),
        pairMs: roundSummary(plain.pairMs),
        natsEchoMs: roundSummary(plain.natsEchoMs),
      },
      session: {
        ...session,
        acquireMs: roundSummary(session.acquireMs),
        releaseMs: roundSummary(session.releaseMs),
        pairMs: roundSummary(session.pairMs),
        natsEchoMs: roundSummary(session.natsEchoMs),
      },
    },
    markdown,
    targets: [],
    headlines: [
      { figure: "lease acquire + release, p50 / p99 (ms)", value: `${fmt(plain.pairMs.p50, 3)} / ${fmt(plain.pairMs.p99, 3)}` },
      { figure: "bare NATS request/reply, p50 (ms)", value: fmt(plain.natsEchoMs.p50, 3) },
    ],
  };
}
