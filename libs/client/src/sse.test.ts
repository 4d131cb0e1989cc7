import { describe, expect, it } from "vitest";
import { parseSse, type SseMessage } from "./sse.ts";

/** The messages of a stream that arrives in these pieces. */
async function parse(...pieces: (string | Uint8Array)[]): Promise<SseMessage[]> {
  const enc = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of pieces) c.enqueue(typeof p === "string" ? enc.encode(p) : p);
      c.close();
    },
  });
  const out: SseMessage[] = [];
  for await (const m of parseSse(body)) out.push(m);
  return out;
}

describe("parseSse", () => {
  it("reads id, event, data and retry; skips comments; joins data lines", async () => {
    const msgs = await parse(': heartbeat\n\nid: 7\nevent: snapshot\ndata: {"a":\ndata: 1}\nretry: 3000\n\ndata: plain\n\n');
    expect(msgs).toEqual([
      { id: "7", event: "snapshot", data: '{"a":\n1}', retry: 3000 },
      { id: undefined, event: "message", data: "plain", retry: undefined },
    ]);
  });

  it("takes \\r\\n, \\r and \\n as line ends, even when a piece ends between \\r and \\n or inside a character", async () => {
    const euro = new TextEncoder().encode("data: €\n\n");
    const msgs = await parse("id: 1\r", "\ndata: a\r\n\r", "\nid: 2\rdata: b\r\r", euro.slice(0, 7), euro.slice(7));
    expect(msgs.map((m) => [m.id, m.data])).toEqual([
      ["1", "a"],
      ["2", "b"],
      [undefined, "€"],
    ]);
  });

  it("drops a message the stream ended inside, and one without data", async () => {
    expect(await parse("event: x\n\ndata: cut")).toEqual([]);
  });

  it("takes a field without a colon as empty, and only the first space after the colon away", async () => {
    const msgs = await parse("data\ndata:  two\n\n");
    expect(msgs[0]?.data).toBe("\n two");
  });
});
