/**
 * A long conversation never outgrows its context: 200 turns of one session on a 512-token
 * context with the demo model (whose replies often tokenize byte by byte, so the api's byte
 * estimate is far off). The api recalls more than fits; the worker counts the real tokens and
 * drops the oldest recalled layers. Every turn is answered, and the prompt always holds the
 * newest layers that fit: with one layer more, the same prompt would not leave the reply its room.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

type Message = { role: string; content: string };
type Reply = {
  choices: { message: { content: string } }[];
  usage: { prompt_tokens: number };
  atlas: { memory?: { layers: number } };
};

let stack: Stack;
const MAX_TOKENS = 16;
const CONTEXT = 512;

beforeAll(async () => {
  stack = await startStack({ services: ["scheduler", "worker", "api", "persistence"], env: { ATLAS_CTX_SIZE: String(CONTEXT) } });
}, 60_000);
afterAll(async () => stack?.close());

async function chat(messages: Message[], session?: string): Promise<{ status: number; body: Reply }> {
  const res = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "atlas-tiny",
      messages,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      ...(session === undefined ? {} : { atlas: { session_id: session } }),
    }),
  });
  return { status: res.status, body: (await res.json()) as Reply };
}

describe("a long session", () => {
  it("answers 200 turns on a 512-token context, always with the newest layers that fit", async () => {
    const layers: Message[][] = [];
    const failures: string[] = [];
    let checked = 0;
    for (let turn = 1; turn <= 200; turn++) {
      const user = { role: "user", content: `Turn ${turn}: and then?` };
      const r = await chat([user], "long");
      if (r.status !== 200) {
        failures.push(`turn ${turn}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
        continue;
      }
      const kept = r.body.atlas.memory?.layers ?? -1;
      expect(kept, `turn ${turn}`).toBeGreaterThanOrEqual(0);
      expect(kept, `turn ${turn}`).toBeLessThanOrEqual(layers.length);
      // It fits: the prompt leaves the reply its room.
      expect(r.body.usage.prompt_tokens + MAX_TOKENS, `turn ${turn}`).toBeLessThanOrEqual(CONTEXT);
      // The newest that fit: the same prompt with the next older layer too would not (checked
      // every 20 turns once layers are dropped, with the conversation sent explicitly).
      if (turn % 20 === 0 && kept < layers.length) {
        const explicit = await chat([...layers.slice(layers.length - kept - 1).flat(), user]);
        const longer = explicit.status === 200 ? explicit.body.usage.prompt_tokens : Number.POSITIVE_INFINITY;
        expect(longer + MAX_TOKENS, `turn ${turn}: ${kept + 1} layers`).toBeGreaterThan(CONTEXT);
        const same = await chat([...layers.slice(layers.length - kept).flat(), user]);
        expect(same.body.usage.prompt_tokens, `turn ${turn}: ${kept} layers`).toBe(r.body.usage.prompt_tokens);
        checked += 1;
      }
      layers.push([user, { role: "assistant", content: r.body.choices[0]?.message.content ?? "" }]);
      // The append follows the answer; the next turn's recall waits for this api's own appends.
    }
    expect(failures).toEqual([]);
    expect(layers.length).toBe(200);
    expect(checked).toBeGreaterThanOrEqual(5); // the history outgrew the context early on
  }, 240_000);
});
