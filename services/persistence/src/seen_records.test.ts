/** `SeenRecords`: a recall waits for the records its caller's appends put on the log, not longer. */
import { describe, expect, it } from "vitest";
import { SeenRecords } from "./seen_records.ts";

describe("SeenRecords", () => {
  it("answers at once for records already seen, and as soon as the missing ones arrive", async () => {
    const seen = new SeenRecords();
    seen.note("a");
    expect(await seen.wait(["a"], 10_000)).toBe(true);
    let done = false;
    const waiting = seen.wait(["a", "b", "c"], 10_000).then((ok) => {
      done = true;
      return ok;
    });
    seen.note("b");
    await Promise.resolve();
    expect(done).toBe(false); // "c" is still missing
    seen.note("c");
    expect(await waiting).toBe(true);
  });

  it("gives up after the timeout when a record never comes, and leaves no waiter behind", async () => {
    const seen = new SeenRecords();
    expect(await seen.wait(["never"], 20)).toBe(false);
    seen.note("never"); // nobody to wake
    expect(await seen.wait(["never"], 20)).toBe(true);
  });
});
