/**
 * `npm run memory-key -- <command>`: the master key of encryption at rest (docs/security.md,
 * "Encryption at rest").
 *
 * - `generate` prints a new master key (32 random bytes, base64) and its key check value.
 * - `status` shows which master key wraps the data keys (`check`), the configured keys, and the
 *   data keys with the key that wraps each.
 * - `rotate` re-wraps every data key with the current master key (`ATLAS_MEMORY_KEY` or the first
 *   line of `ATLAS_MEMORY_KEY_FILE`), unwrapping each with whichever configured key wrapped it —
 *   give the old one in `ATLAS_MEMORY_KEY_PREVIOUS` (or as a later line of the key file). The
 *   sealed data itself is not rewritten: it is encrypted with the data keys, which do not change.
 *
 * It connects to NATS with the same variables as the services (`NATS_URL`, `NATS_USER`,
 * `NATS_PASSWORD` — the persistence user may write the key bucket).
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { Bus } from "@atlas/bus";
import { type Config, loadConfig, natsServers } from "@atlas/config";
import { ATLAS_VERSION, memoryKeysBucket } from "@atlas/contracts";
import { Keyring, type KeyStore, keyCheckValue, loadMasterKeys, rotateMasterKey, WrappedKey } from "@atlas/sealed";

const USAGE = "usage: npm run memory-key -- generate | status | rotate";

/** Runs one command against the key bucket `store`; returns the lines to print. */
export async function memoryKeyCommand(command: string, config: Config, store: KeyStore): Promise<string[]> {
  const master = loadMasterKeys(config);
  if (command === "status") {
    const check = new TextDecoder().decode((await store.get("check"))?.value ?? new Uint8Array());
    const out = [
      `wrapped by:  ${check === "" ? "(no key check: never encrypted)" : (JSON.parse(check) as { master: string }).master}`,
      `configured:  ${master === undefined ? "(no master key)" : [master.current.kcv, ...master.previous.map((k) => `${k.kcv} (previous)`)].join(", ")}`,
    ];
    for await (const k of await store.keys("*.*")) {
      const e = await store.get(k);
      if (e === null || e.operation !== "PUT") continue;
      const w = WrappedKey.parse(JSON.parse(new TextDecoder().decode(e.value)));
      out.push(`data key ${w.scope}:${w.gen}  wrapped by ${w.master}  created ${w.created_at}`);
    }
    return out;
  }
  if (command === "rotate") {
    if (master === undefined)
      throw new Error(
        "rotate needs the new key in ATLAS_MEMORY_KEY (or ATLAS_MEMORY_KEY_FILE) and the old one in ATLAS_MEMORY_KEY_PREVIOUS",
      );
    const r = await rotateMasterKey(store, master);
    await Keyring.open(store, { current: master.current, previous: [] }); // every key now opens with the new master alone
    return [
      `re-wrapped ${r.rewrapped} data key(s) with master key ${master.current.kcv} (${r.unchanged} already were); the data was not rewritten`,
    ];
  }
  throw new Error(USAGE);
}

/** The command line: connects, runs, prints. */
async function main(): Promise<void> {
  const command = process.argv[2] ?? "";
  if (command === "generate") {
    const key = randomBytes(32);
    process.stdout.write(`${key.toString("base64")}\nkey check value: ${keyCheckValue(key)}\n`);
    return;
  }
  if (command !== "status" && command !== "rotate") throw new Error(USAGE);
  const config = loadConfig(process.env);
  const bus = await Bus.connect({
    servers: natsServers(config),
    prefix: config.ATLAS_NATS_PREFIX,
    service: { name: "memory-key", version: ATLAS_VERSION, description: "Master key rotation" },
    discoverable: false,
    ...(config.NATS_USER === undefined ? {} : { user: config.NATS_USER, pass: config.NATS_PASSWORD ?? "" }),
  });
  try {
    const store = await bus.jetstream.kv(memoryKeysBucket(config.ATLAS_NATS_PREFIX), {
      history: 1,
      description: "ATLAS wrapped data keys",
    });
    for (const line of await memoryKeyCommand(command, config, store)) process.stdout.write(`${line}\n`);
  } finally {
    await bus.close({ graceMs: 0 });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`memory-key: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
