/**
 * Bounded state: every JetStream stream of the stack (KV buckets are `KV_<bucket>` streams,
 * object stores `OBJ_<bucket>`, listed through `$JS.API.STREAM.LIST` with `@nats-io/jetstream`),
 * its messages and bytes before a long one-token load, halfway through and at the end. State
 * that is bounded by slots, sessions and workers stops growing once they are all in use; state
 * that grows with requests (a record or a delete marker left per lease, per request) keeps
 * growing through the second half. The verdict is on the second half's growth per 1,000
 * requests.
 *
 * Sessions (a few, a few turns each) run before the first snapshot, so the session-memory
 * streams are in use; the load itself is stateless, so the conversation log (which grows with
 * every turn by design: it is the conversation) stays out of the verdict.
 *
 * @module
 */
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { type BenchContext, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { type LoadResult, runLoad } from "../lib/load.ts";
import { startBenchStack } from "../lib/stack.ts";
import { fmt } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];
/** Growth per 1,000 requests over the second half below which a stream counts as bounded. */
const MAX_MSGS_PER_1K = 1;
const MAX_BYTES_PER_1K = 1024;

interface StreamState {
  name: string;
  messages: number;
  bytes: number;
  subjects: number | null;
  limits: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function limits(si: StreamInfo): string {
  const c = si.config;
  const out: string[] = [c.retention];
  if (c.max_msgs_per_subject > 0) out.push(`${c.max_msgs_per_subject}/subject`);
  if (c.max_msgs > 0) out.push(`max ${c.max_msgs} msgs`);
  if (c.max_bytes > 0) out.push(`max ${c.max_bytes} B`);
  if (c.max_age > 0) out.push(`max age ${fmt(c.max_age / 1e9, c.max_age < 1e10 ? 1 : 0)} s`);
  return out.join(", ");
}

/** Runs the bounded-state scenario. */
export async function stateScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const { slots } = ctx.settings;
  const total = ctx.quick ? 6000 : 50_000;
  const half = Math.round(total / 2);
  const connections = 32;
  const sessions = 8;
  const turns = 4;
  ctx.log(`state: JetStream streams before, during and after ${total.toLocaleString("en-US")} one-token requests at c=${connections}`);
  const stack = await startBenchStack(ctx, "state");
  const nc = await connect({ servers: stack.natsUrl, name: "bench-state" });
  const snapshots: { label: string; requests: number; streams: StreamState[] }[] = [];
  const loads: LoadResult[] = [];
  try {
    const jsm = await jetstreamManager(nc);
    const snapshot = async (label: string, requests: number) => {
      await sleep(2000); // releases and other follow-ups of the last requests land first
      const streams: StreamState[] = [];
      for await (const si of jsm.streams.list()) {
        streams.push({
          name: si.config.name.replaceAll(stack.prefix, "<p>"),
          messages: si.state.messages,
          bytes: si.state.bytes,
          subjects: si.state.num_subjects ?? null,
          limits: limits(si),
        });
      }
      streams.sort((a, b) => a.name.localeCompare(b.name));
      snapshots.push({ label, requests, streams });
    };
    const url = `${stack.baseUrl}/v1/chat/completions`;
    const body = { model: tiny.id, messages: MESSAGES, max_tokens: 1 };
    await runLoad({ url, body, connections: 1, durationS: 0, amount: sessions * turns, sessions: { prefix: "bench-state", turns } });
    await runLoad({ url, body, connections, durationS: 0, amount: 500 });
    await snapshot("before the load", 0);
    loads.push(await runLoad({ url, body, connections, durationS: 0, amount: half, timeoutS: 60 }));
    await snapshot("halfway", loads[0]!.requests);
    loads.push(await runLoad({ url, body, connections, durationS: 0, amount: total - half, timeoutS: 60 }));
    await snapshot("after the load", loads[0]!.requests + loads[1]!.requests);
  } finally {
    await nc.close().catch(() => {});
    await stack.stop();
  }

  const [a, b, c] = snapshots as [(typeof snapshots)[0], (typeof snapshots)[0], (typeof snapshots)[0]];
  const secondHalf = c.requests - b.requests;
  const names = [...new Set(snapshots.flatMap((s) => s.streams.map((x) => x.name)))].sort();
  const get = (s: (typeof snapshots)[0], name: string) => s.streams.find((x) => x.name === name);
  const rows = names.map((name) => {
    const [x, y, z] = [get(a, name), get(b, name), get(c, name)];
    const msgsPer1k = secondHalf > 0 ? (((z?.messages ?? 0) - (y?.messages ?? 0)) * 1000) / secondHalf : Number.NaN;
    const bytesPer1k = secondHalf > 0 ? (((z?.bytes ?? 0) - (y?.bytes ?? 0)) * 1000) / secondHalf : Number.NaN;
    return {
      name,
      limits: (z ?? y ?? x)?.limits ?? "",
      before: x,
      halfway: y,
      after: z,
      msgsPer1k,
      bytesPer1k,
      bounded: msgsPer1k < MAX_MSGS_PER_1K && bytesPer1k < MAX_BYTES_PER_1K,
    };
  });
  const growing = rows.filter((r) => !r.bounded);
  const errors = loads.reduce((s, l) => s + l.errors + l.non2xx, 0);
  const requests = loads.reduce((s, l) => s + l.requests, 0);
  const scheduler = rows.filter((r) => /scheduler/.test(r.name));
  const targets: Target[] = [
    {
      scenario: "state",
      target: `JetStream state bounded by slots/sessions/workers, not by requests (every stream < ${MAX_MSGS_PER_1K} message and < ${MAX_BYTES_PER_1K / 1024} KiB per 1,000 requests over the second half of ${total.toLocaleString("en-US")})`,
      met: secondHalf >= 1000 ? growing.length === 0 : null,
      detail:
        growing.length === 0
          ? `no stream grew over the last ${secondHalf.toLocaleString("en-US")} requests beyond that (${scheduler.map((r) => `${r.name} ${fmt(r.msgsPer1k, 2)} msgs / ${fmt(r.bytesPer1k, 0)} B per 1,000`).join("; ")}); ${rows.length} streams, ${requests.toLocaleString("en-US")} requests, ${errors} errors.`
          : `growing with requests: ${growing.map((r) => `${r.name} +${fmt(r.msgsPer1k, 1)} msgs and +${fmt(r.bytesPer1k, 0)} B per 1,000 requests (${r.after?.messages ?? 0} msgs, ${r.after?.bytes ?? 0} B at the end)`).join("; ")}; ${requests.toLocaleString("en-US")} requests, ${errors} errors.`,
    },
  ];
  const cell = (s: StreamState | undefined) => (s === undefined ? "–" : `${s.messages} / ${s.bytes.toLocaleString("en-US")}`);
  const markdown = [
    `One stack (1 worker, ${slots} slots, tiny model). First ${sessions} sessions × ${turns} turns (\`atlas.session_id\`) and 500 stateless warm-up requests; then **${requests.toLocaleString("en-US")} stateless one-token requests at concurrency ${connections}** in two halves (${loads.map((l) => `${l.requests.toLocaleString("en-US")} in ${fmt(l.durationS, 0)} s`).join(", ")}; ${errors} errors). Every JetStream stream (KV buckets are \`KV_<bucket>\`, object stores \`OBJ_<bucket>\`; the stack's prefix shown as \`<p>\`) listed 2 s after each step, as messages / bytes:`,
    "",
    table(
      ["stream", "limits", "before", "halfway", "after", "second half: msgs / 1,000 req", "bytes / 1,000 req", "bounded"],
      rows.map((r) => [
        `\`${r.name}\``,
        r.limits,
        cell(r.before),
        cell(r.halfway),
        cell(r.after),
        fmt(r.msgsPer1k, 2),
        fmt(r.bytesPer1k, 0),
        r.bounded ? "yes" : "**no**",
      ]),
      ["l", "l", "r", "r", "r", "r", "r", "l"],
    ),
    "",
    `A stream counts as bounded when, over the second half (${secondHalf.toLocaleString("en-US")} requests, after slots, workers and the sessions are all in use), it gained under ${MAX_MSGS_PER_1K} message and under ${MAX_BYTES_PER_1K} bytes per 1,000 requests. The conversation log grows with each session turn by design (it is the conversation), which is why the load is stateless.`,
  ].join("\n");
  return {
    name: "state",
    title: "Bounded state: JetStream streams under load",
    data: { total, connections, sessions, turns, snapshots, rows, loads: loads.map((l) => ({ ...l, latencyMs: undefined })) },
    markdown,
    targets,
    headlines: [
      {
        figure: `JetStream streams growing with requests (of ${rows.length}), over ${requests.toLocaleString("en-US")} requests`,
        value: growing.length === 0 ? "0" : `${growing.length}: ${growing.map((r) => r.name).join(", ")}`,
      },
    ],
  };
}
