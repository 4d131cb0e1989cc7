import type { EngineMessage } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { fitHistory } from "./history.ts";

const m = (role: EngineMessage["role"], content: string): EngineMessage => ({ role, content });
// A stand-in for rendering and tokenizing: one token per character, plus 2 per message.
const measure = (messages: EngineMessage[]) => messages.reduce((n, x) => n + x.content.length + 2, 0);

describe("fitHistory", () => {
  const sys = m("system", "be brief"); // 10
  const layer = (i: number) => [m("user", `q${i}`.padEnd(8, ".")), m("assistant", `a${i}`.padEnd(18, "."))]; // 10 + 20
  const user = m("user", "now what?"); // 11
  const messages = [sys, ...layer(1), ...layer(2), ...layer(3), user]; // 10 + 90 + 11 = 111
  const marks = { start: 1, layers: [2, 2, 2] };

  it("keeps everything when it fits", () => {
    expect(fitHistory(messages, marks, measure, (n) => n <= 111)).toMatchObject({ dropped: 0, prompt: 111 });
  });

  it("drops the fewest oldest layers that make it fit, never the instructions or the request's own messages", () => {
    const one = fitHistory(messages, marks, measure, (n) => n <= 110);
    expect(one?.dropped).toBe(1);
    expect(one?.messages).toEqual([sys, ...layer(2), ...layer(3), user]);
    expect(fitHistory(messages, marks, measure, (n) => n <= 60)?.messages).toEqual([sys, ...layer(3), user]);
    expect(fitHistory(messages, marks, measure, (n) => n <= 21)).toMatchObject({ dropped: 3, messages: [sys, user], prompt: 21 });
  });

  it("gives up when even the request alone does not fit, or the marks do not match the messages", () => {
    expect(fitHistory(messages, marks, measure, (n) => n <= 20)).toBeUndefined();
    expect(fitHistory(messages, { start: 5, layers: [2, 2, 2] }, measure, () => false)).toBeUndefined();
  });
});
