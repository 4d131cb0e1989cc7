import { describe, expect, it } from "vitest";
import { toChatHistory } from "./prompt.ts";

describe("toChatHistory", () => {
  it("maps OpenAI roles and opens a fresh model turn", () => {
    expect(
      toChatHistory([
        { role: "developer", content: "d" },
        { role: "system", content: "s" },
        { role: "user", content: "u" },
        { role: "assistant", content: "a" },
      ]),
    ).toEqual([
      { type: "system", text: "d" },
      { type: "system", text: "s" },
      { type: "user", text: "u" },
      { type: "model", response: ["a"] },
      { type: "model", response: [] },
    ]);
  });
});
