import type { EngineMessage } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { buildPrompt, estimateTokens, fitLayers } from "./recall.ts";

const layer = (id: string, bytes: number) => ({ id, messages: [{ content: "x".repeat(bytes) }] });

describe("estimateTokens", () => {
  it("counts bytes / 2 (rounded up) plus 8 per message, UTF-8 aware", () => {
    expect(estimateTokens([{ content: "" }])).toBe(8);
    expect(estimateTokens([{ content: "abc" }, { content: "ab" }])).toBe(2 + 8 + 1 + 8);
    expect(estimateTokens([{ content: "é" }])).toBe(1 + 8); // 2 bytes
  });
});

describe("fitLayers", () => {
  const layers = [layer("1", 20), layer("2", 20), layer("3", 20)]; // 18 tokens each
  it("keeps the newest layers that fit, dropping the oldest first", () => {
    expect(fitLayers(layers, 1000).map((l) => l.id)).toEqual(["1", "2", "3"]);
    expect(fitLayers(layers, 36).map((l) => l.id)).toEqual(["2", "3"]);
    expect(fitLayers(layers, 17)).toEqual([]);
  });
  it("takes at most maxLayers", () => {
    expect(fitLayers(layers, 1000, 2).map((l) => l.id)).toEqual(["2", "3"]);
    expect(fitLayers(layers, 20, 2).map((l) => l.id)).toEqual(["3"]);
  });
});

describe("buildPrompt", () => {
  const sys: EngineMessage = { role: "system", content: "rules" };
  const dev: EngineMessage = { role: "developer", content: "more rules" };
  const user: EngineMessage = { role: "user", content: "new" };
  const history: EngineMessage[] = [
    { role: "system", content: "old rules" },
    { role: "user", content: "old" },
    { role: "assistant", content: "old reply" },
  ];
  it("places the history before the new messages", () => {
    expect(buildPrompt([user], history)).toEqual([...history, user]);
  });
  it("keeps the request's leading system/developer messages first and drops recalled ones", () => {
    expect(buildPrompt([sys, dev, user], history)).toEqual([sys, dev, history[1], history[2], user]);
  });
});
