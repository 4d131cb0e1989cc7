/**
 * What one session turn's append writes to JetStream, turn by turn: the bytes the session's
 * memory log stream and the memory KV bucket gain while one turn is answered and its layer
 * appended (persistence writes the layer record after the answer, so each turn waits for the
 * log's message count to move). Shows that an append writes the new layer, not the document.
 *
 * @module
 */
import { memoryNames } from "@atlas/contracts";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";

/** Bytes written by each turn (index 0 = turn 1). */
export interface AppendCost {
  log: number[];
  kv: number[];
}

/** Runs `turns` one-token chat turns of one session against `baseUrl` and measures each append. */
export async function measureAppendCost(options: {
  baseUrl: string;
  natsUrl: string;
  prefix: string;
  model: string;
  turns: number;
}): Promise<AppendCost> {
  const nc = await connect({ servers: options.natsUrl, name: "bench-append-cost" });
  try {
    const jsm = await jetstreamManager(nc);
    const names = memoryNames(options.prefix);
    const state = async () => {
      const log = (await jsm.streams.info(names.log)).state;
      const kv = (await jsm.streams.info(`KV_${names.kv}`)).state;
      return { messages: log.messages, log: log.bytes, kv: kv.bytes };
    };
    const out: AppendCost = { log: [], kv: [] };
    const session = `bench-append-${crypto.randomUUID().slice(0, 8)}`;
    for (let turn = 1; turn <= options.turns; turn++) {
      const before = await state();
      const res = await fetch(`${options.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: options.model,
          messages: [{ role: "user", content: `Turn ${turn}: the same few words every time.` }],
          max_tokens: 1,
          temperature: 0,
          atlas: { session_id: session },
        }),
      });
      if (res.status !== 200) throw new Error(`append cost: turn ${turn} answered ${res.status}: ${await res.text()}`);
      await res.arrayBuffer();
      let after = await state();
      for (let i = 0; i < 200 && after.messages === before.messages; i++) {
        await new Promise((r) => setTimeout(r, 10));
        after = await state();
      }
      out.log.push(after.log - before.log);
      out.kv.push(after.kv - before.kv);
    }
    return out;
  } finally {
    await nc.close();
  }
}
