/**
 * Messages on NATS per request, per subject: a counter subscribed to `>` on the stack's own
 * `nats-server` (`bench/lib/nats_count.ts`) while one-token chat requests run one at a time:
 * - **stateless**: no `atlas` field;
 * - **session**: `atlas.session_id`, sessions of several consecutive turns (recall from session
 *   memory, the append to the memory stream, affinity);
 * - **append cost**: one session of 50 turns, the bytes each turn's append writes to JetStream
 *   (`bench/lib/append_cost.ts`): turn 50's against turn 1's.
 *
 * Background traffic (heartbeats, worker stats, metric snapshots, leader claim renewals, timers'
 * JetStream API calls) is removed by subtraction, not by subject filtering, so that a request's
 * own messages on a shared subject still count: idle windows (no requests) before and after the
 * load give each subject's background rate, and each load window's count is reduced by that
 * rate × the window's length before dividing by the requests.
 *
 * @module
 */
import { type AppendCost, measureAppendCost } from "../lib/append_cost.ts";
import { type BenchContext, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { runLoad } from "../lib/load.ts";
import { countSubjects, normalized, type Window } from "../lib/nats_count.ts";
import { startBenchStack } from "../lib/stack.ts";
import { fmt } from "../lib/stats.ts";

const MESSAGES = [{ role: "user" as const, content: "Hello" }];
const STATELESS_TARGET = 6;
const SESSION_TARGET = 10;
/** Turns of the append-cost session, and how much more turn 50's append may write than turn 1's. */
const APPEND_TURNS = 50;
const APPEND_GROWTH_TARGET = 2;
/** After the last response, messages a request causes later (a release not awaited, a memory append consumed by persistence) still land in its window. */
const SETTLE_MS = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Row {
  subject: string;
  idlePerS: number;
  stateless: number;
  session: number;
  statelessBytes: number;
  sessionBytes: number;
}

/** Per-request counts of a load window, with the idle rate × the window's length subtracted per subject. */
function perRequest(
  load: Map<string, { messages: number; bytes: number }>,
  loadMs: number,
  idle: Map<string, { messages: number; bytes: number }>,
  idleMs: number,
  requests: number,
): Map<string, { messages: number; bytes: number }> {
  const out = new Map<string, { messages: number; bytes: number }>();
  for (const k of new Set([...load.keys(), ...idle.keys()])) {
    const l = load.get(k) ?? { messages: 0, bytes: 0 };
    const i = idle.get(k) ?? { messages: 0, bytes: 0 };
    const scale = loadMs / idleMs;
    out.set(k, { messages: (l.messages - i.messages * scale) / requests, bytes: (l.bytes - i.bytes * scale) / requests });
  }
  return out;
}

function merge(a: Window, b: Window): Window {
  const counts = new Map(a.counts);
  for (const [k, v] of b.counts) {
    const e = counts.get(k);
    counts.set(k, e === undefined ? v : { messages: e.messages + v.messages, bytes: e.bytes + v.bytes });
  }
  return { ms: a.ms + b.ms, counts };
}

/** Runs the messages scenario. */
export async function messagesScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const { tiny } = ctx.models;
  const { slots } = ctx.settings;
  const statelessN = ctx.quick ? 300 : 1000;
  const turns = 10;
  const sessionN = (ctx.quick ? 8 : 20) * turns;
  const idleMs = ctx.quick ? 4000 : 8000;
  ctx.log(`messages: counting NATS messages for ${statelessN} stateless and ${sessionN} session requests at c=1`);
  const stack = await startBenchStack(ctx, "messages");
  const url = `${stack.baseUrl}/v1/chat/completions`;
  const body = { model: tiny.id, messages: MESSAGES, max_tokens: 1 };
  let counter: Awaited<ReturnType<typeof countSubjects>> | undefined;
  let idle: Window;
  let stateless: Window;
  let session: Window;
  let statelessOk: number;
  let sessionOk: number;
  let errors = 0;
  let appends: AppendCost | undefined;
  try {
    counter = await countSubjects(stack.natsUrl);
    // Warm both paths up (JIT, buckets and streams created on first use), outside any window.
    await runLoad({ url, body, connections: 1, durationS: 0, amount: 50 });
    await runLoad({ url, body, connections: 1, durationS: 0, amount: 20, sessions: { prefix: "bench-warm", turns: 5 } });
    await sleep(SETTLE_MS);

    counter.open();
    await sleep(idleMs);
    const idleBefore = await counter.close();

    counter.open();
    const a = await runLoad({ url, body, connections: 1, durationS: 0, amount: statelessN });
    await sleep(SETTLE_MS);
    stateless = await counter.close();
    statelessOk = a.requests;
    errors += a.errors + a.non2xx;

    counter.open();
    const b = await runLoad({
      url,
      body,
      connections: 1,
      durationS: 0,
      amount: sessionN,
      sessions: { prefix: "bench-msg", turns },
    });
    await sleep(SETTLE_MS);
    session = await counter.close();
    sessionOk = b.requests;
    errors += b.errors + b.non2xx;

    counter.open();
    await sleep(idleMs);
    idle = merge(idleBefore, await counter.close());

    // Outside the counted windows: what each of one session's 50 appends writes.
    appends = await measureAppendCost({
      baseUrl: stack.baseUrl,
      natsUrl: stack.natsUrl,
      prefix: stack.prefix,
      model: tiny.id,
      turns: APPEND_TURNS,
    });
  } finally {
    await counter?.stop().catch(() => {});
    await stack.stop();
  }

  const idleN = normalized(idle, stack.prefix);
  const a = perRequest(normalized(stateless, stack.prefix), stateless.ms, idleN, idle.ms, statelessOk);
  const b = perRequest(normalized(session, stack.prefix), session.ms, idleN, idle.ms, sessionOk);
  const rows: Row[] = [...new Set([...a.keys(), ...b.keys()])].map((subject) => ({
    subject,
    idlePerS: ((idleN.get(subject)?.messages ?? 0) * 1000) / idle.ms,
    stateless: a.get(subject)?.messages ?? 0,
    session: b.get(subject)?.messages ?? 0,
    statelessBytes: a.get(subject)?.bytes ?? 0,
    sessionBytes: b.get(subject)?.bytes ?? 0,
  }));
  rows.sort((x, y) => Math.max(y.session, y.stateless) - Math.max(x.session, x.stateless) || x.subject.localeCompare(y.subject));
  const sum = (f: (r: Row) => number) => rows.reduce((s, r) => s + f(r), 0);
  const totalStateless = sum((r) => r.stateless);
  const totalSession = sum((r) => r.session);
  // Subjects that are all background (no request of either kind adds to them) go in a note.
  const noise = 0.02;
  const shown = rows.filter((r) => Math.abs(r.stateless) >= noise || Math.abs(r.session) >= noise);
  const backgroundOnly = rows.filter((r) => !shown.includes(r));

  const appendBytes = (turn: number) => (appends?.log[turn - 1] ?? 0) + (appends?.kv[turn - 1] ?? 0);
  const first = appendBytes(1);
  const last = appendBytes(APPEND_TURNS);
  const targets: Target[] = [
    {
      scenario: "messages",
      target: `JetStream bytes written by a session's turn-${APPEND_TURNS} append ≤ ${APPEND_GROWTH_TARGET}× turn 1's`,
      met: appends === undefined || first === 0 ? null : last <= APPEND_GROWTH_TARGET * first,
      detail: `turn 1 wrote ${first} bytes (log ${appends?.log[0] ?? 0}, KV ${appends?.kv[0] ?? 0}), turn ${APPEND_TURNS} ${last} bytes (log ${
        appends?.log[APPEND_TURNS - 1] ?? 0
      }, KV ${appends?.kv[APPEND_TURNS - 1] ?? 0}): ${first > 0 ? fmt(last / first, 2) : "–"}×.`,
    },
    {
      scenario: "messages",
      target: `NATS messages per stateless one-token request ≤ ${STATELESS_TARGET} (c=1)`,
      met: statelessOk > 0 ? totalStateless <= STATELESS_TARGET : null,
      detail: `${fmt(totalStateless, 2)} messages (${fmt(
        sum((r) => r.statelessBytes),
        0,
      )} payload bytes) per request over ${statelessOk} requests, background subtracted; biggest: ${shown
        .filter((r) => r.stateless >= 0.5)
        .slice(0, 4)
        .map((r) => `${r.subject} ${fmt(r.stateless, 2)}`)
        .join(", ")}.`,
    },
    {
      scenario: "messages",
      target: `NATS messages per session request (atlas.session_id) ≤ ${SESSION_TARGET} (c=1)`,
      met: sessionOk > 0 ? totalSession <= SESSION_TARGET : null,
      detail: `${fmt(totalSession, 2)} messages (${fmt(
        sum((r) => r.sessionBytes),
        0,
      )} payload bytes) per request over ${sessionOk} requests (${sessionOk / turns} sessions × ${turns} turns), background subtracted.`,
    },
  ];

  const markdown = [
    `Every message on the stack's NATS server, counted by a plain connection subscribed to \`>\` (the benchmark's \`nats-server\` has no users), while one-token chat requests (tiny model, \`max_tokens: 1\`) run one at a time: ${statelessOk} **stateless** requests, then ${sessionOk} **session** requests (\`atlas.session_id\`; ${sessionOk / turns} sessions of ${turns} consecutive turns, ${slots} slots, so a new session displaces an older one from its slot). Both request kinds were warmed up first. ${errors} errors.`,
    "",
    `**Background is subtracted, not filtered**: two idle windows (${fmt(idle.ms / 1000, 1)} s in all, before and after the load) give each subject's background rate (heartbeats, worker stats, metric snapshots, leader claims, timers' \`$JS.API\` calls); each load window's count minus that rate × the window's length (${fmt(stateless.ms / 1000, 1)} s and ${fmt(session.ms / 1000, 1)} s, including ${SETTLE_MS} ms after the last response for messages a request causes later), divided by the window's requests, is the per-request figure. Small negative figures are background noise. Subjects are normalized: the stack's prefix → \`<p>\`, reply inboxes → \`_INBOX.*\`, ids → \`<id>\`, numbers → \`<n>\`, worker ids → \`<worker>\`, session ids → \`<session>\`, JetStream ack tokens → \`<ack>\`.`,
    "",
    table(
      ["subject", "stateless msgs / request", "session msgs / request", "idle msgs / s"],
      [
        ...shown.map((r) => [`\`${r.subject}\``, fmt(r.stateless, 2), fmt(r.session, 2), fmt(r.idlePerS, 2)]),
        [
          `**all subjects**${backgroundOnly.length > 0 ? ` (incl. ${backgroundOnly.length} background-only)` : ""}`,
          `**${fmt(totalStateless, 2)}**`,
          `**${fmt(totalSession, 2)}**`,
          fmt(
            sum((r) => r.idlePerS),
            2,
          ),
        ],
        [
          "payload bytes / request",
          fmt(
            sum((r) => r.statelessBytes),
            0,
          ),
          fmt(
            sum((r) => r.sessionBytes),
            0,
          ),
          "",
        ],
      ],
      ["l", "r", "r", "r"],
    ),
    "",
    backgroundOnly.length === 0
      ? ""
      : `Background-only subjects (under ${noise} per request either way): ${backgroundOnly.map((r) => `\`${r.subject}\` ${fmt(r.idlePerS, 2)}/s`).join(", ")}.`,
    "",
    appends === undefined
      ? ""
      : `**What an append writes.** One session of ${APPEND_TURNS} one-token turns, the bytes JetStream's memory log stream and memory KV bucket grew by while each turn was answered and its layer appended: ${[
          1,
          2,
          10,
          25,
          APPEND_TURNS,
        ]
          .map((t) => `turn ${t}: ${appendBytes(t)} B`)
          .join(", ")} (the log record of the new layer; the document is not rewritten).`,
  ].join("\n");

  return {
    name: "messages",
    title: "Messages on NATS per request",
    data: {
      statelessRequests: statelessOk,
      sessionRequests: sessionOk,
      turnsPerSession: turns,
      windowsMs: { idle: idle.ms, stateless: stateless.ms, session: session.ms },
      perRequest: { stateless: totalStateless, session: totalSession },
      appendBytesByTurn: appends,
      subjects: rows,
    },
    markdown,
    targets,
    headlines: [
      {
        figure: "NATS messages per one-token request, stateless / session (c=1)",
        value: `${fmt(totalStateless, 1)} / ${fmt(totalSession, 1)}`,
      },
    ],
  };
}
