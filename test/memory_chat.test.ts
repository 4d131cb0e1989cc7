/**
 * Conversation continuity on a real cluster (nats-server, persistence, a worker on the tiny
 * model, the api): the client sends only its new message with `atlas.session_id`, and the
 * prompt holds the earlier turns; a turn's memory costs one exchange each way (counted on the
 * wire); with persistence stopped the turns are still answered and every exchange lands once,
 * in order, when it is back.
 */
import { memoryNames, sessionToken } from "@atlas/contracts";
import { connect, type Msg } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

const MODEL = "atlas-tiny";
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ services: ["persistence", "worker", "api"], env: { ATLAS_AUTO_SAVE_INTERVAL: "1" } });
});
afterAll(async () => stack?.close());

type Message = { role: "system" | "user" | "assistant"; content: string };
interface Chat {
  status: number;
  degraded: string | null;
  // biome-ignore lint/suspicious/noExplicitAny: checked with matchers
  body: any;
}

async function chat(messages: Message[], extra: Record<string, unknown> = {}): Promise<Chat> {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages, max_tokens: 8, temperature: 0, ...extra }),
  });
  return { status: res.status, degraded: res.headers.get("x-atlas-degraded"), body: await res.json() };
}

async function memory(sessionId: string) {
  const res = await fetch(`${stack.baseUrl}/v1/atlas/memory/${sessionId}`);
  return {
    status: res.status,
    body: (await res.json()) as { layers: { id: string; messages: Message[]; usage: { prompt_tokens: number } }[] },
  };
}

const flatten = (layers: { messages: Message[] }[]) => layers.flatMap((l) => l.messages);

describe("continuity", () => {
  it("puts the earlier turns of a 5-turn conversation into each prompt, and stores every exchange", async () => {
    const prompts: number[] = [];
    for (let turn = 1; turn <= 5; turn++) {
      const r = await chat([{ role: "user", content: `Turn ${turn}: tell me something new.` }], { atlas: { session_id: "conv.5" } });
      expect(r.status).toBe(200);
      expect(r.degraded ?? "").not.toContain("memory"); // "scheduler" is fine: this cluster runs without one
      expect(r.body.atlas).toMatchObject({ session_id: "conv.5" });
      prompts.push(r.body.usage.prompt_tokens);
    }
    for (let i = 1; i < prompts.length; i++) expect(prompts[i]).toBeGreaterThan(prompts[i - 1] ?? 0);

    const stored = await memory("conv.5");
    expect(stored.status).toBe(200);
    expect(stored.body.layers).toHaveLength(5);
    stored.body.layers.forEach((layer, i) => {
      expect(layer.messages[0]).toEqual({ role: "user", content: `Turn ${i + 1}: tell me something new.` });
      expect(layer.messages[1]?.role).toBe("assistant");
      expect(layer.usage.prompt_tokens).toBe(prompts[i]);
    });

    // The recalled prompt is exactly the conversation sent in full, without memory.
    const sixth: Message = { role: "user", content: "Turn 6: and now?" };
    const explicit = await chat([...flatten(stored.body.layers), sixth]);
    const recalled = await chat([sixth], { atlas: { session_id: "conv.5" } });
    expect(recalled.body.usage.prompt_tokens).toBe(explicit.body.usage.prompt_tokens);
  });

  it("limits the recall to the last memory_layers exchanges", async () => {
    const stored = await memory("conv.5");
    const last2 = stored.body.layers.slice(-2);
    const next: Message = { role: "user", content: "Only the last two, please." };
    const explicit = await chat([...flatten(last2), next]);
    const recalled = await chat([next], { atlas: { session_id: "conv.5", memory_layers: 2 } });
    expect(recalled.status).toBe(200);
    expect(recalled.body.usage.prompt_tokens).toBe(explicit.body.usage.prompt_tokens);
    const all = await chat([next], { atlas: { session_id: "conv.5" } });
    expect(all.body.usage.prompt_tokens).toBeGreaterThan(recalled.body.usage.prompt_tokens);
  });

  it("keeps the request's system message first and recalls after it", async () => {
    const system: Message = { role: "system", content: "You are terse." };
    await chat([system, { role: "user", content: "first" }], { atlas: { session_id: "conv-sys" } });
    const stored = await memory("conv-sys");
    const second: Message = { role: "user", content: "second" };
    const explicit = await chat([system, { role: "user", content: "first" }, ...stored.body.layers[0]!.messages.slice(2), second]);
    const recalled = await chat([system, second], { atlas: { session_id: "conv-sys" } });
    expect(recalled.body.usage.prompt_tokens).toBe(explicit.body.usage.prompt_tokens);
  });

  it("stores a streamed answer, and choice 0 when n > 1", async () => {
    const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: MODEL,
        messages: [{ role: "user", content: "Stream it." }],
        max_tokens: 8,
        stream: true,
        atlas: { session_id: "conv-stream" },
      }),
    });
    const text = (await res.text())
      .split("\n")
      .filter((l) => l.startsWith("data: {"))
      .map((l) => JSON.parse(l.slice(6)) as { choices: { delta: { content?: string } }[] })
      .map((c) => c.choices[0]?.delta.content ?? "")
      .join("");
    await expect.poll(async () => (await memory("conv-stream")).body.layers?.[0]?.messages[1]?.content, { timeout: 5000 }).toBe(text);

    const multi = await chat([{ role: "user", content: "Two answers." }], {
      n: 2,
      temperature: 1,
      seed: 3,
      atlas: { session_id: "conv-n" },
    });
    expect(multi.body.choices).toHaveLength(2);
    const stored = await memory("conv-n");
    expect(stored.body.layers).toHaveLength(1);
    expect(stored.body.layers[0]?.messages[1]?.content).toBe(multi.body.choices[0].message.content);
  });
});

/** Counts session memory's NATS messages, as a subscriber to `>` on an unrestricted connection sees them. */
async function wireSpy() {
  const prefix = stack.config.ATLAS_NATS_PREFIX;
  const names = memoryNames(prefix);
  // Session memory on the wire: its subjects, its JetStream resources, and replies to them.
  const isMemory = (subject: string) =>
    subject.startsWith(`${prefix}.memory.`) ||
    (subject.startsWith("$") && [names.kv, names.log, names.stream, names.transfer].some((n) => subject.includes(n)));
  // Persistence refreshes its health from stream and consumer info every 5 s: not a turn's.
  const isPeriodic = (subject: string) => /^\$JS\.API\.(STREAM|CONSUMER)\.INFO\./.test(subject);
  const nc = await connect({ servers: stack.nats.url });
  const seen: string[] = [];
  const replyTo = new Map<string, string>();
  let session = "";
  // Another session's traffic (an earlier test's append still landing) is not this turn's.
  const otherSession = (m: Msg) => {
    if (m.subject.startsWith(`${prefix}.memory.log.`)) return !m.subject.endsWith(`.${sessionToken(session)}`);
    if (m.subject !== `${prefix}.memory.recall` && m.subject !== `${prefix}.memory.add`) return false;
    return (m.json() as { session_id?: string }).session_id !== session;
  };
  nc.subscribe(">", {
    callback: (_err, m: Msg) => {
      if (m.headers?.code === 100) return; // idle heartbeats
      const to = replyTo.get(m.subject);
      if (to !== undefined) seen.push(`reply to ${to}`);
      else if (isMemory(m.subject) && !isPeriodic(m.subject) && !otherSession(m)) {
        seen.push(m.subject);
        // A layer record is published with memory.add's reply subject: JetStream's ack is memory.add's reply.
        if (m.reply !== undefined && !replyTo.has(m.reply)) replyTo.set(m.reply, m.subject);
      }
    },
  });
  await nc.flush();
  const recall = `${prefix}.memory.recall`;
  const add = `${prefix}.memory.add`;
  const log = `${prefix}.memory.log.`;
  return {
    close: () => nc.close(),
    /** One chat turn of a session, and the memory messages it caused. */
    turn: async (sessionId: string, content: string) => {
      session = sessionId;
      seen.length = 0;
      const r = await chat([{ role: "user", content }], { atlas: { session_id: sessionId } });
      expect(r.status).toBe(200);
      expect(r.degraded ?? "").not.toContain("memory");
      // The append follows the answer: wait for its reply, then a little for anything else.
      await expect.poll(() => seen.includes(`reply to ${add}`), { timeout: 5000, interval: 20 }).toBe(true);
      await new Promise((res) => setTimeout(res, 300));
      return {
        prompt: r.body.usage.prompt_tokens as number,
        recall: seen.filter((s) => s.endsWith(recall)).length,
        // memory.add, the record on the session's log subject, and the ack (the reply to memory.add).
        append: seen.filter((s) => s.endsWith(add) || s.includes(log)).length,
        other: seen.filter((s) => !s.endsWith(recall) && !s.endsWith(add) && !s.includes(log)),
      };
    },
  };
}

describe("NATS messages of a turn", () => {
  it("recalls in one exchange (2 messages) and appends in one exchange whose record JetStream acknowledges to the api (3)", async () => {
    const spy = await wireSpy();
    try {
      // The first turn makes the session; every turn costs the same.
      for (let turn = 1; turn <= 4; turn++) {
        expect(await spy.turn("conv-counted", `Counted turn ${turn}`)).toMatchObject({ recall: 2, append: 3, other: [] });
      }
      expect((await memory("conv-counted")).body.layers).toHaveLength(4);
    } finally {
      await spy.close();
    }
  });

  it("stays correct and as cheap with two persistence instances taking turns", async () => {
    await stack.start("persistence"); // a second instance in the queue group
    const spy = await wireSpy();
    try {
      const prompts: number[] = [];
      for (let turn = 1; turn <= 8; turn++) {
        const t = await spy.turn("conv-two", `Two instances, turn ${turn}`);
        expect(t).toMatchObject({ recall: 2, append: 3, other: [] });
        prompts.push(t.prompt);
      }
      for (let i = 1; i < prompts.length; i++) expect(prompts[i]).toBeGreaterThan(prompts[i - 1] ?? 0); // every turn recalled all earlier ones
      const second = stack.running.get("persistence")?.[1];
      const served = (await second?.handle.health())?.details?.cache as { hits: number; writes: number } | undefined;
      expect((served?.hits ?? 0) + (served?.writes ?? 0)).toBeGreaterThan(0); // the queue group used both
      const stored = await memory("conv-two");
      expect(stored.body.layers.map((l) => l.messages[0]?.content)).toEqual(
        Array.from({ length: 8 }, (_, i) => `Two instances, turn ${i + 1}`),
      );
      const next: Message = { role: "user", content: "And now?" };
      const explicit = await chat([...flatten(stored.body.layers), next]);
      const recalled = await chat([next], { atlas: { session_id: "conv-two" } });
      expect(recalled.body.usage.prompt_tokens).toBe(explicit.body.usage.prompt_tokens);
    } finally {
      await spy.close();
    }
  });
});

describe("persistence outage", () => {
  it("answers 20 turns while persistence is stopped, then holds all 20 layers in order, once", async () => {
    await stack.stop("persistence");
    for (let turn = 1; turn <= 20; turn++) {
      const r = await chat([{ role: "user", content: `Outage turn ${turn}` }], { atlas: { session_id: "conv-outage" } });
      expect(r.status).toBe(200);
      expect(r.degraded).toContain("memory");
      expect(r.body.choices[0].message.role).toBe("assistant");
    }
    expect((await memory("conv-outage")).status).toBe(503);
    await stack.start("persistence");
    await expect.poll(async () => (await memory("conv-outage")).body.layers?.length, { timeout: 10_000 }).toBe(20);
    const layers = (await memory("conv-outage")).body.layers;
    expect(layers.map((l) => l.messages[0]?.content)).toEqual(Array.from({ length: 20 }, (_, i) => `Outage turn ${i + 1}`));
    expect(new Set(layers.map((l) => l.id)).size).toBe(20);
    // Memory is back: the next turn recalls and is not degraded.
    const back = await chat([{ role: "user", content: "Back?" }], { atlas: { session_id: "conv-outage" } });
    expect(back.degraded ?? "").not.toContain("memory");
    expect(back.body.usage.prompt_tokens).toBeGreaterThan(20);
  });
});
