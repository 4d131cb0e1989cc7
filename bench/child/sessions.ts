/**
 * The sessions client, run as its own process: S conversations × T turns, round-robin (turn 1
 * of every session, then turn 2 of every session, …), one request at a time, each streamed so
 * the time to first token is seen by the client. Modes:
 * - `session`: the request carries `atlas.session_id` and only the new user message; the
 *   server recalls the history (session memory) and keeps the KV state (affinity, tiers);
 * - `history`: no session; the client resends the whole conversation each turn, as with any
 *   OpenAI-compatible server (the mode used against llama-server too).
 *
 * Protocol: `{type: "run", spec}` → `{type: "result", result: TurnRecord[]}`.
 *
 * @module
 */
import type { SessionsSpec, TurnRecord } from "../lib/sessions.ts";

interface Message {
  role: "user" | "assistant" | "system";
  content: string;
}

// One-token words of the generated models' vocabulary (libs/gguf/src/vocab.ts).
const WORDS = (
  "the of and to in is you that it he was for on are as with his they at be this have from or one had by word but not what all " +
  "were we when your can said there use an each which she do how their if will up other about out many then them these so some " +
  "her would make like him into time has look two more write go see number no way could people my than first water been call"
).split(" ");

function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A user message of `words` one-token words, deterministic per session and turn. */
function userMessage(session: number, turn: number, words: number): string {
  const r = random(session * 1000 + turn);
  return Array.from({ length: words }, () => WORDS[Math.floor(r() * WORDS.length)]!).join(" ");
}

async function turn(
  spec: SessionsSpec,
  session: number,
  turnNo: number,
  history: Message[],
): Promise<{ record: TurnRecord; reply: string }> {
  const content = userMessage(session, turnNo, spec.messageWords);
  const sessionId = `bench-s${session}-${spec.runId}`;
  const messages = spec.mode === "session" ? [{ role: "user", content }] : [...history, { role: "user", content }];
  const body = {
    model: spec.model,
    messages,
    max_tokens: spec.maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ...(spec.mode === "session" ? { atlas: { session_id: sessionId } } : {}),
    ...(spec.extraBody ?? {}),
  };
  const t0 = performance.now();
  const res = await fetch(`${spec.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok || res.body === null) throw new Error(`turn ${turnNo} of session ${session}: HTTP ${res.status} ${await res.text()}`);
  let ttft: number | undefined;
  let reply = "";
  let usage: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | undefined;
  let atlas: { cache?: { outcome?: string; cached_tokens?: number }; timings?: { ttft_ms?: number } } | undefined;
  let llamaTimings: { prompt_n?: number; cache_n?: number; prompt_ms?: number } | undefined;
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const part of res.body) {
    buffer += decoder.decode(part as Uint8Array, { stream: true });
    let cut = buffer.indexOf("\n\n");
    while (cut >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      cut = buffer.indexOf("\n\n");
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const j = JSON.parse(data) as {
          choices?: { delta?: { content?: string | null } }[];
          usage?: typeof usage;
          atlas?: typeof atlas;
          timings?: typeof llamaTimings;
        };
        const text = j.choices?.[0]?.delta?.content;
        if (typeof text === "string" && text !== "") {
          ttft ??= performance.now() - t0;
          reply += text;
        }
        if (j.usage != null) usage = j.usage;
        if (j.atlas !== undefined) atlas = j.atlas;
        if (j.timings !== undefined) llamaTimings = j.timings;
      }
    }
  }
  const total = performance.now() - t0;
  const prompt = usage?.prompt_tokens ?? (llamaTimings === undefined ? 0 : (llamaTimings.prompt_n ?? 0) + (llamaTimings.cache_n ?? 0));
  const cached = usage?.prompt_tokens_details?.cached_tokens ?? llamaTimings?.cache_n ?? 0;
  return {
    reply,
    record: {
      session,
      turn: turnNo,
      ttftMs: ttft ?? total,
      totalMs: total,
      promptTokens: prompt,
      cachedTokens: cached,
      evaluatedTokens: Math.max(0, prompt - cached),
      completionTokens: usage?.completion_tokens ?? 0,
      tier: atlas?.cache?.outcome ?? (cached > 0 ? "prefix" : "miss"),
      engineTtftMs: atlas?.timings?.ttft_ms ?? llamaTimings?.prompt_ms ?? null,
    },
  };
}

process.on("message", (msg: { type: string; spec: SessionsSpec }) => {
  if (msg.type !== "run") return;
  const { spec } = msg;
  void (async () => {
    try {
      const histories: Message[][] = Array.from({ length: spec.sessions }, () => []);
      const records: TurnRecord[] = [];
      for (let t = 1; t <= spec.turns; t++) {
        for (let s = 0; s < spec.sessions; s++) {
          const { record, reply } = await turn(spec, s, t, histories[s]!);
          records.push(record);
          histories[s]!.push({ role: "user", content: userMessage(s, t, spec.messageWords) }, { role: "assistant", content: reply });
        }
      }
      process.send?.({ type: "result", result: records }, () => process.exit(0));
    } catch (err) {
      process.send?.({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.exit(1));
    }
  })();
});
