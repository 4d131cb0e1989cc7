import { describe, expect, it } from "vitest";
import { StopStringMatcher } from "./stop.ts";

function feed(
  stops: string[],
  pieces: string[],
  options = {},
): { out: string[]; stopped: boolean; stop: string | undefined; rest: string } {
  const m = new StopStringMatcher(stops, options);
  const out: string[] = [];
  let stop: string | undefined;
  for (const p of pieces) {
    const scan = m.push(p);
    out.push(scan.text);
    if (scan.stopped) {
      stop = scan.stop;
      break;
    }
  }
  return { out, stopped: m.stopped, stop, rest: m.flush() };
}

describe("StopStringMatcher", () => {
  it("passes text through when there are no stop strings", () => {
    expect(feed([], ["a", "b"]).out).toEqual(["a", "b"]);
  });

  it("ends before a stop string inside one chunk", () => {
    expect(feed(["END"], ["hello END there"])).toMatchObject({ out: ["hello "], stopped: true, stop: "END" });
  });

  it("holds a possible start of a stop string and finds one split across chunks", () => {
    const r = feed(["END"], ["hello E", "N", "D more"]);
    expect(r.out).toEqual(["hello ", "", ""]);
    expect(r.stopped).toBe(true);
  });

  it("releases held text that turns out not to be a stop string", () => {
    expect(feed(["END"], ["hello E", "Nx"]).out).toEqual(["hello ", "ENx"]);
    expect(feed(["END"], ["tail E"]).rest).toBe("E");
  });

  it("stops at the earliest of several stop strings", () => {
    expect(feed(["zz", "b"], ["a b zz"])).toMatchObject({ out: ["a "], stop: "b" });
    expect(feed(["ab", "abc"], ["xabc"])).toMatchObject({ out: ["x"], stop: "abc" });
  });

  it("ignores input after a stop", () => {
    const m = new StopStringMatcher(["!"]);
    expect(m.push("a!b").text).toBe("a");
    expect(m.push("more")).toEqual({ text: "", stopped: true });
  });

  it("never cuts a surrogate pair", () => {
    const m = new StopStringMatcher(["😀x"]);
    const scan = m.push("a😀");
    expect(scan.text).toBe("a");
    expect(m.push("y").text).toBe("😀y");
  });

  it("holds trailing whitespace when asked to", () => {
    const r = feed([], ["{}", " \n", "\n"], { holdTrailingWhitespace: true });
    expect(r.out).toEqual(["{}", "", ""]);
    expect(r.rest).toBe(" \n\n");
    expect(feed([], ["a ", "b"], { holdTrailingWhitespace: true }).out).toEqual(["a", " b"]);
  });
});
