import { describe, expect, it } from "vitest";
import { chatLogprobs, textLogprobs } from "./logprobs.ts";

const entry = (token: string, logprob: number, top: [string, number][] = []) => ({
  token,
  bytes: [...Buffer.from(token)],
  logprob,
  top: top.map(([t, l]) => ({ token: t, bytes: [...Buffer.from(t)], logprob: l })),
});

describe("chatLogprobs", () => {
  it("maps entries to OpenAI's content list, alternatives as top_logprobs", () => {
    expect(
      chatLogprobs([
        entry("Hi", -0.1, [
          ["Hi", -0.1],
          ["Yo", -2],
        ]),
      ]),
    ).toEqual({
      content: [
        {
          token: "Hi",
          logprob: -0.1,
          bytes: [72, 105],
          top_logprobs: [
            { token: "Hi", logprob: -0.1, bytes: [72, 105] },
            { token: "Yo", logprob: -2, bytes: [89, 111] },
          ],
        },
      ],
      refusal: null,
    });
    expect(chatLogprobs(undefined)).toEqual({ content: [], refusal: null });
  });
});

describe("textLogprobs", () => {
  it("lists tokens with offsets from where the text starts, alternatives with the sampled token", () => {
    const lp = textLogprobs([entry(" a", -1, [[" b", -0.5]]), entry("bc", -2)], 5);
    expect(lp).toEqual({
      tokens: [" a", "bc"],
      token_logprobs: [-1, -2],
      top_logprobs: [{ " b": -0.5, " a": -1 }, { bc: -2 }],
      text_offset: [5, 7],
    });
  });

  it("keeps tokens spelled like Object.prototype's names as plain keys", () => {
    const lp = textLogprobs([entry("__proto__", -1, [["constructor", -0.5]])], 0);
    const top = lp.top_logprobs[0] ?? {};
    expect(Object.keys(top).sort()).toEqual(["__proto__", "constructor"]);
    expect(JSON.parse(JSON.stringify(lp.top_logprobs[0]))).toEqual({ constructor: -0.5, ["__proto__"]: -1 });
  });
});
