/**
 * A full `npm start` restart keeps a session warm: the supervisor (`libs/supervisor/src/main.ts`)
 * with its embedded nats-server, one worker on the generated demo model, persistence and the
 * api; three turns of a session, then SIGTERM to the supervisor (what Ctrl-C does), then a
 * second start on the same data folder. The stopped worker saved its slot's session to L3 on the way
 * out, so the session's next turn — sent as only the new message, memory recalls the rest — is
 * restored from L3 by the new worker process (its slots start empty and its L2 folder is wiped
 * at start) and evaluates only what is new, with
 * the same greedy answer as a conversation that never stopped.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@atlas/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const MAIN = join(import.meta.dirname, "..", "libs", "supervisor", "src", "main.ts");

type Reply = {
  choices: { message: { content: string } }[];
  usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  atlas: { cache: { outcome: string }; workers: string[] };
};

let dir: string;
let port: number;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-restart-"));
});
afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** `npm start` on the test's data folder; resolves once the api lists a model. */
async function start(): Promise<{ proc: ChildProcess; model: string; output: () => string; exited: Promise<number | null> }> {
  // A port of its own for each start: one probed free before the first start may belong to
  // another test's process by the second (the suite runs files in parallel).
  port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(ATLAS_|NATS_|NODE_OPTIONS$|PORT$|HOST$)/.test(k)) env[k] = v;
  Object.assign(env, {
    ATLAS_NATS_PREFIX: `restart${process.pid}`,
    ATLAS_WORKERS: "1",
    ATLAS_SLOTS: "2",
    ATLAS_DATA_DIR: join(dir, "data"),
    ATLAS_MEMORY_PATH: join(dir, "memory"),
    // Restore whenever there is a snapshot: on the tiny model recomputing costs about as much.
    ATLAS_KV_RESTORE: "always",
    HOST: "127.0.0.1",
    PORT: String(port),
    ATLAS_LOG_FORMAT: "json",
    ATLAS_SHUTDOWN_GRACE_MS: "5000",
  });
  const proc = spawn(process.execPath, ["--conditions=development", "--import", "tsx", MAIN], {
    cwd: join(import.meta.dirname, ".."),
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  const collect = (c: Buffer) => {
    text = (text + c.toString("utf8")).slice(-400_000);
  };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  let model = "";
  try {
    await expect
      .poll(
        async () => {
          const r = await fetch(`http://127.0.0.1:${port}/v1/models`).catch(() => undefined);
          model = r?.ok === true ? (((await r.json()) as { data: { id: string }[] }).data[0]?.id ?? "") : "";
          return model;
        },
        { timeout: 90_000, interval: 500 },
      )
      .not.toBe("");
  } catch (err) {
    // The output is read when the wait fails, not when it begins (it is empty then).
    throw new Error(`no model served within 90 s; the supervisor's output:\n${text.slice(-6000)}`, { cause: err });
  }
  return { proc, model, output: () => text, exited };
}

async function chat(model: string, session: string, content: string): Promise<Reply> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model,
      messages: [{ role: "user", content }],
      max_tokens: 16,
      temperature: 0,
      atlas: { session_id: session },
    }),
  });
  const body = await res.json();
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body as Reply;
}

/** Waits until persistence has both turns of a session (the append follows the answer). */
async function stored(session: string, layers: number): Promise<void> {
  await expect
    .poll(
      async () => {
        const r = await fetch(`http://127.0.0.1:${port}/v1/atlas/memory/${session}`);
        return r.ok ? ((await r.json()) as { layers: unknown[] }).layers.length : 0;
      },
      { timeout: 10_000 },
    )
    .toBe(layers);
}

const TURNS = [
  `${"Tell me about the lighthouse keeper and the long winter. ".repeat(12)}Begin.`,
  "What did he eat?",
  "Who visited him?",
  "What happened next?",
];

describe("npm start restarted with SIGTERM", () => {
  it("restores a session's 4th turn from L3 after 3 turns and a restart: ≥ 90% of the prompt cached, the same greedy answer", async () => {
    const first = await start();
    let second: Awaited<ReturnType<typeof start>> | undefined;
    try {
      // The reference conversation never stops; the other one spans the restart.
      const ref: Reply[] = [];
      for (const t of TURNS) ref.push(await chat(first.model, "reference", t));
      for (const [i, t] of TURNS.slice(0, 3).entries()) {
        const r = await chat(first.model, "spanning", t);
        expect(r.choices[0]?.message.content).toBe(ref[i]?.choices[0]?.message.content);
      }
      await stored("spanning", 3);

      first.proc.kill("SIGTERM");
      expect(await first.exited, first.output().slice(-4000)).toBe(0);
      expect(first.output()).toContain("saved its warm sessions to L3");

      second = await start();
      const fourth = await chat(second.model, "spanning", TURNS[3] as string);
      const want = ref[3] as Reply;
      expect(fourth.atlas.cache.outcome).toBe("l3");
      expect(fourth.usage.prompt_tokens).toBe(want.usage.prompt_tokens);
      // Only the new message (and its template tokens) is evaluated, as in the conversation that
      // never stopped (whose slot still held it): the rest comes from the snapshot.
      expect(fourth.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(want.usage.prompt_tokens_details.cached_tokens);
      expect(fourth.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(0.9 * fourth.usage.prompt_tokens);
      expect(fourth.choices[0]?.message.content).toBe(want.choices[0]?.message.content);
    } finally {
      for (const run of [first, second]) {
        if (run === undefined || run.proc.exitCode !== null) continue;
        run.proc.kill("SIGTERM");
        await Promise.race([run.exited, new Promise((r) => setTimeout(r, 20_000))]);
        if (run.proc.exitCode === null) run.proc.kill("SIGKILL");
      }
    }
  }, 240_000);
});
