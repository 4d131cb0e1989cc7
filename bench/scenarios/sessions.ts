/**
 * Scenario 3, sessions: S conversations × T turns over 4 slots, round-robin, one request at a
 * time, so more sessions than slots compete for the KV cache. Modes:
 * - **affinity + tiers**: `atlas.session_id`, default L2/L3 budgets (a displaced session's KV
 *   state is snapshotted and restored);
 * - **affinity, no L2/L3**: `atlas.session_id` with `ATLAS_L2_BUDGET_MB=0 ATLAS_L3_BUDGET_MB=0`
 *   (only what is still resident in a slot is reused);
 * - **no affinity**: no session; the client resends the whole conversation (plain OpenAI use);
 * - **llama-server** (when the run has it: `--with-llama-server` or `LLAMA_SERVER_BIN`): the same,
 *   with its prompt cache.
 *
 * @module
 */
import { type BenchContext, type ScenarioResult, type Target, table } from "../lib/context.ts";
import { byteTokenBias, startLlamaServer } from "../lib/llama_server.ts";
import type { BenchModel } from "../lib/models.ts";
import { runSessions, type TurnRecord } from "../lib/sessions.ts";
import { startStack } from "../lib/stack.ts";
import { fmt, summarize } from "../lib/stats.ts";

interface ModeSpec {
  key: string;
  label: string;
  kind: "stack" | "llama";
  mode: "session" | "history";
  env?: Record<string, string>;
}

const MODES: ModeSpec[] = [
  { key: "tiers", label: "affinity + L2/L3 tiers", kind: "stack", mode: "session" },
  {
    key: "noTiers",
    label: "affinity, no L2/L3",
    kind: "stack",
    mode: "session",
    env: { ATLAS_L2_BUDGET_MB: "0", ATLAS_L3_BUDGET_MB: "0" },
  },
  { key: "noAffinity", label: "no affinity (client resends history)", kind: "stack", mode: "history" },
  { key: "llama", label: "llama-server (prompt cache)", kind: "llama", mode: "history" },
];

interface Setup {
  name: string;
  model: BenchModel;
  sessions: number;
  turns: number;
  messageWords: number;
  maxTokens: number;
}

interface ModeResult {
  key: string;
  label: string;
  records: TurnRecord[];
}

async function runMode(ctx: BenchContext, setup: Setup, m: ModeSpec): Promise<ModeResult | undefined> {
  const { slots, ctxSize, threads } = ctx.settings;
  const spec = {
    model: setup.model.id,
    mode: m.mode,
    sessions: setup.sessions,
    turns: setup.turns,
    messageWords: setup.messageWords,
    maxTokens: setup.maxTokens,
    runId: `${setup.name}-${m.key}`,
  };
  ctx.log(`sessions/${setup.name}: ${m.label}`);
  if (m.kind === "llama") {
    if (ctx.llamaServerBin === undefined) return undefined;
    const server = await startLlamaServer({
      binary: ctx.llamaServerBin,
      modelPath: setup.model.path,
      slots,
      ctxPerSlot: ctxSize,
      threads,
      logDir: ctx.tmpDir,
      label: `sessions-${setup.name}`,
    });
    try {
      return {
        key: m.key,
        label: m.label,
        records: await runSessions({
          ...spec,
          baseUrl: server.baseUrl,
          extraBody: { cache_prompt: true, logit_bias: await byteTokenBias(setup.model.path) },
        }),
      };
    } finally {
      await server.stop();
    }
  }
  const stack = await startStack({
    label: `sessions-${setup.name}-${m.key}`,
    modelPath: setup.model.path,
    modelId: setup.model.id,
    workers: 1,
    slots,
    ctxSize,
    threads,
    tmpDir: ctx.tmpDir,
    ...(m.env === undefined ? {} : { env: m.env }),
  });
  try {
    return { key: m.key, label: m.label, records: await runSessions({ ...spec, baseUrl: stack.baseUrl }) };
  } finally {
    await stack.stop();
  }
}

function byTurn(records: TurnRecord[], turns: number): TurnRecord[][] {
  return Array.from({ length: turns }, (_, i) => records.filter((r) => r.turn === i + 1));
}

function mean(xs: number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/**
 * Evaluated tokens a returning turn may take beyond what is new in it: the previous reply's last
 * token, which llama.cpp evaluates only with the next one (llama-server likewise).
 */
const SLACK_TOKENS = 1;

/**
 * What is new in a returning turn, in tokens: its prompt minus the previous turn's prompt and
 * reply (the same session) — the new message, the template tokens around it and the previous
 * reply's end of turn. Exact per turn, whatever the message's length.
 */
function newTokens(x: TurnRecord, records: readonly TurnRecord[]): number | undefined {
  const prev = records.find((y) => y.session === x.session && y.turn === x.turn - 1);
  if (prev === undefined) return undefined;
  // An empty reply: the chat template leaves the empty assistant turn out of the history, so the
  // previous prompt's last tokens (its generation header) are not in this prompt; up to
  // EMPTY_REPLY_HEADER of them that this turn did not reuse count as template tokens of the new turn.
  const header = prev.completionTokens === 0 ? Math.min(EMPTY_REPLY_HEADER, Math.max(0, prev.promptTokens - x.cachedTokens)) : 0;
  return x.promptTokens - (prev.promptTokens - header) - prev.completionTokens;
}

/** Most tokens an empty reply's generation header may take (see {@link newTokens}). */
const EMPTY_REPLY_HEADER = 16;

/** Evaluated tokens beyond what is new (negative: less than that was evaluated). */
function excess(x: TurnRecord, records: readonly TurnRecord[]): number {
  const fresh = newTokens(x, records);
  return fresh === undefined ? Number.NaN : x.evaluatedTokens - fresh;
}

function analyse(setup: Setup, results: ModeResult[]) {
  const turn1Prompt = (r: ModeResult) => mean(r.records.filter((x) => x.turn === 1).map((x) => x.promptTokens));
  return results.map((r) => {
    const turns = byTurn(r.records, setup.turns);
    const returning = r.records.filter((x) => x.turn > 1);
    const newMessage = turn1Prompt(r);
    // Every conversation starts with the same template tokens: a hit reuses more than those.
    const templatePrefix = Math.max(0, ...r.records.filter((x) => x.turn === 1).map((x) => x.cachedTokens));
    const onlyNew = returning.filter((x) => excess(x, r.records) <= SLACK_TOKENS).length;
    const tiers: Record<string, number> = {};
    for (const x of returning) tiers[x.tier] = (tiers[x.tier] ?? 0) + 1;
    return {
      key: r.key,
      label: r.label,
      ttftMeanByTurn: turns.map((t) => mean(t.map((x) => x.ttftMs))),
      ttftP50ByTurn: turns.map((t) => summarize(t.map((x) => x.ttftMs)).p50),
      evaluatedMeanByTurn: turns.map((t) => mean(t.map((x) => x.evaluatedTokens))),
      newMeanByTurn: turns.map((t) => mean(t.map((x) => newTokens(x, r.records) ?? x.promptTokens))),
      excessMaxByTurn: turns.map((t) => (t[0]?.turn === 1 ? Number.NaN : Math.max(...t.map((x) => excess(x, r.records))))),
      promptMeanByTurn: turns.map((t) => mean(t.map((x) => x.promptTokens))),
      tierByTurn: turns.map((t) => {
        const c: Record<string, number> = {};
        for (const x of t) c[x.tier] = (c[x.tier] ?? 0) + 1;
        return c;
      }),
      returningTiers: tiers,
      newMessageTokens: newMessage,
      returningOnlyNew: onlyNew,
      returningTurns: returning.length,
      templatePrefix,
      hitRatio: returning.length === 0 ? Number.NaN : returning.filter((x) => x.cachedTokens > templatePrefix).length / returning.length,
      records: r.records,
    };
  });
}

function tierText(c: Record<string, number>): string {
  return Object.entries(c)
    .sort()
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
}

function section(setup: Setup, analysed: ReturnType<typeof analyse>): string {
  const turnHeads = Array.from({ length: setup.turns }, (_, i) => `turn ${i + 1}`);
  return [
    `**${setup.sessions} sessions × ${setup.turns} turns, ${setup.model.preset} model** (${setup.messageWords}-word user messages ≈ ${setup.messageWords} tokens, replies of up to ${setup.maxTokens} tokens at temperature 0, round-robin over the sessions, one request at a time, streamed).`,
    "",
    "Time to first token, mean over the sessions (ms, client side):",
    "",
    table(
      ["mode", ...turnHeads],
      analysed.map((a) => [a.label, ...a.ttftMeanByTurn.map((v) => fmt(v, 1))]),
    ),
    "",
    "Prompt tokens evaluated (prompt − cached), mean over the sessions; the last column is the prompt size at the last turn:",
    "",
    table(
      ["mode", ...turnHeads, "prompt at last turn"],
      analysed.map((a) => [a.label, ...a.evaluatedMeanByTurn.map((v) => fmt(v, 1)), fmt(a.promptMeanByTurn[setup.turns - 1], 0)]),
    ),
    "",
    "What is new in each turn (prompt − the previous turn's prompt and reply, from `usage`), mean over the sessions, and the most any session's turn evaluated beyond it (1: the previous reply's last token, which is evaluated with the next turn):",
    "",
    table(
      ["mode", ...turnHeads.slice(1).map((t) => `${t} new / beyond`)],
      analysed.map((a) => [a.label, ...a.newMeanByTurn.slice(1).map((v, i) => `${fmt(v, 1)} / ${fmt(a.excessMaxByTurn[i + 1], 0)}`)]),
    ),
    "",
    "Where returning turns (2…T) found their prefix, and how many evaluated only what was new in them:",
    "",
    table(
      [
        "mode",
        "cache outcome of returning turns",
        "hit ratio (reused more than the template prefix)",
        `evaluated ≤ what is new + ${SLACK_TOKENS}`,
      ],
      analysed.map((a) => [
        a.label,
        tierText(a.returningTiers),
        `${fmt(a.hitRatio * 100, 1)}% (prefix ${a.templatePrefix} tokens)`,
        `${a.returningOnlyNew}/${a.returningTurns} (new ≈ ${fmt(mean(a.newMeanByTurn.slice(1)), 0)} tokens a turn)`,
      ]),
      ["l", "l", "r", "r"],
    ),
  ].join("\n");
}

/** A warning when no returning turn came back from a snapshot tier, which the tiers exist for. */
function restoredNote(tiers: Record<string, number>): string {
  const restored = (tiers.l2 ?? 0) + (tiers.l3 ?? 0);
  return restored === 0
    ? "no returning turn was restored from L2 or L3 (every one reports `l1` or `miss`); "
    : `${restored} returning turns were restored from L2/L3; `;
}

/** Runs the sessions scenario. */
export async function sessionsScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const setups: Setup[] = ctx.quick
    ? [{ name: "tiny-8", model: ctx.models.tiny, sessions: 8, turns: 6, messageWords: 40, maxTokens: 32 }]
    : [
        { name: "bench-8", model: ctx.models.bench, sessions: 8, turns: 6, messageWords: 40, maxTokens: 32 },
        { name: "tiny-16", model: ctx.models.tiny, sessions: 16, turns: 6, messageWords: 40, maxTokens: 32 },
      ];
  const all: { setup: Setup; analysed: ReturnType<typeof analyse> }[] = [];
  for (const setup of setups) {
    const results: ModeResult[] = [];
    for (const m of MODES) {
      const r = await runMode(ctx, setup, m);
      if (r !== undefined) results.push(r);
    }
    all.push({ setup, analysed: analyse(setup, results) });
  }

  const main = all[0]!;
  const tiers = main.analysed.find((a) => a.key === "tiers")!;
  const noAff = main.analysed.find((a) => a.key === "noAffinity");
  const llama = main.analysed.find((a) => a.key === "llama");
  const last = main.setup.turns - 1;
  const targets: Target[] = [
    {
      scenario: "sessions",
      target: "a returning turn evaluates only its new message (affinity + tiers)",
      met: tiers.returningOnlyNew === tiers.returningTurns,
      detail: `${restoredNote(tiers.returningTiers)}${tiers.returningOnlyNew} of ${tiers.returningTurns} returning turns evaluated at most what was new in them (+${SLACK_TOKENS}, the previous reply's last token; per turn, from usage: prompt − previous prompt − previous reply) on the ${main.setup.model.preset} model, most beyond that in one turn ${fmt(Math.max(...tiers.excessMaxByTurn.slice(1)), 0)}; mean evaluated per returning turn ${fmt(mean(tiers.evaluatedMeanByTurn.slice(1)), 1)} tokens, against ${fmt(noAff === undefined ? Number.NaN : mean(noAff.evaluatedMeanByTurn.slice(1)), 1)} without affinity.`,
    },
    {
      scenario: "sessions",
      target: `turn-${main.setup.turns} time to first token ≤ 0.5× llama-server's (${main.setup.model.preset} model)`,
      met: llama === undefined ? null : tiers.ttftMeanByTurn[last]! <= 0.5 * llama.ttftMeanByTurn[last]!,
      detail:
        llama === undefined
          ? `not measured in this run (llama-server was not in it: \`--with-llama-server\` or LLAMA_SERVER_BIN); ATLAS's turn-${main.setup.turns} TTFT is ${fmt(tiers.ttftMeanByTurn[last], 1)} ms with tiers vs ${fmt(noAff?.ttftMeanByTurn[last], 1)} ms without affinity.`
          : `${fmt(tiers.ttftMeanByTurn[last], 1)} ms vs llama-server ${fmt(llama.ttftMeanByTurn[last], 1)} ms.`,
    },
  ];
  return {
    name: "sessions",
    title: "3. Sessions: time to first token and cache tiers",
    data: all.map(({ setup, analysed }) => ({ setup: { ...setup, model: setup.model.id }, modes: analysed })),
    markdown: all.map(({ setup, analysed }) => section(setup, analysed)).join("\n\n"),
    targets,
    headlines: [
      {
        figure: `turn-${main.setup.turns} TTFT, ${main.setup.model.preset} model: tiers / no L2-L3 / no affinity (ms)`,
        value: ["tiers", "noTiers", "noAffinity"]
          .map((k) => fmt(main.analysed.find((a) => a.key === k)?.ttftMeanByTurn[last], 0))
          .join(" / "),
      },
      {
        figure: "returning turns evaluating only their new message (tiers)",
        value: `${tiers.returningOnlyNew}/${tiers.returningTurns}`,
      },
    ],
  };
}
