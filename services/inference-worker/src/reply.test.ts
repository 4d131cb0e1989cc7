import { describe, expect, it } from "vitest";
import { alignReply } from "./reply.ts";

const b = (...xs: (string | number[])[]) => xs.map((x) => (typeof x === "string" ? new TextEncoder().encode(x) : Uint8Array.from(x)));

describe("alignReply", () => {
  it("takes the slot's tokens when they are the rendered reply's bytes, split differently", () => {
    expect(alignReply(b("Hel", "lo"), b("He", "llo", "<end>"))).toEqual({ held: 2, reply: 2, whole: true });
    expect(alignReply([], b("<start>"))).toEqual({ held: 0, reply: 0, whole: true });
  });

  it("takes them when they are the same text: invalid UTF-8 the client saw as U+FFFD", () => {
    // The model generated a lone 0xE2 (an unfinished character) mid-reply and at its end.
    const held = b("a", [0xe2], "b", [0xf0, 0x9f]);
    const rendered = b("a", "\uFFFD", "b", "\uFFFD", "<end>");
    expect(alignReply(held, rendered)).toEqual({ held: 4, reply: 4, whole: true });
  });

  it("keeps the longest common run on token boundaries when the rendered reply differs (e.g. trimmed)", () => {
    expect(alignReply(b("one", " two", " \\n"), b("one", " two", "<end>"))).toEqual({ held: 2, reply: 2, whole: false });
    expect(alignReply(b("x"), b("y"))).toBeUndefined();
  });
});
