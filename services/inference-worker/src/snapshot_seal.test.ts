/**
 * Where a sealed snapshot's plain state passes (snapshot_seal.ts), against a real nats-server
 * (the data keys' bucket) and real files: the memory folder when its free space (`statfs`) has
 * room, else `.plain/` in the L2 folder — also when a write in memory runs out of space — and
 * never a file left behind. The memory folder is a temporary folder here, and "too little room"
 * a headroom larger than any disk.
 */
import { mkdir, mkdtemp, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BusJetStream } from "@atlas/bus";
import { createLogger } from "@atlas/log";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ScratchOptions, SnapshotSeal } from "./snapshot_seal.ts";

let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

const config = { ATLAS_MEMORY_KEY: Buffer.alloc(32, 5).toString("base64"), ATLAS_MEMORY_COMPRESSION: "gzip" as const };
const state = Buffer.from("the marmalade is in the blue jar. ".repeat(4000));

/** A seal with its L2 folder (holding a file a crash left in `.plain/`) and its memory folder. */
async function setup(prefix: string, scratch: ScratchOptions) {
  const l2 = await mkdtemp(join(tmpdir(), "atlas-seal-l2-"));
  const shmDir = await mkdtemp(join(tmpdir(), "atlas-seal-shm-"));
  await mkdir(join(l2, ".plain"));
  await writeFile(join(l2, ".plain", "left-by-a-crash.kv"), state);
  const warnings: string[] = [];
  const log = createLogger({ service: "seal-test", level: "warn", destination: { write: (l) => void warnings.push(l) } });
  const seal = await SnapshotSeal.open(new BusJetStream(nc), prefix, config, l2, log, { shmDir, ...scratch });
  const [shm] = await readdir(shmDir);
  return { seal, l2, disk: join(l2, ".plain"), shm: join(shmDir, shm as string), warnings };
}

/** Saves `state` to `path` through `write` (by default the whole state) and restores it; the scratch files used. */
async function roundTrip(seal: SnapshotSeal, path: string, write = (file: string) => writeFile(file, state)) {
  const used: string[] = [];
  await seal.save(path, "ctx", async (file) => {
    used.push(file);
    await write(file);
    return state.length;
  });
  const sealed = await readFile(path);
  expect(sealed.includes("marmalade")).toBe(false);
  let restored = Buffer.alloc(0);
  expect(
    await seal.restore(path, "ctx", async (file) => {
      used.push(file);
      restored = await readFile(file);
    }),
  ).toBe(true);
  expect(restored.equals(state)).toBe(true);
  return used;
}

describe("the scratch file of a sealed snapshot", () => {
  it("is in memory when it has room, and removed once sealed or loaded", async () => {
    const { seal, l2, disk, shm } = await setup("seal-shm", { shmHeadroomBytes: 0 });
    expect(await readdir(disk)).toEqual([]); // emptied at start
    const used = await roundTrip(seal, join(l2, "a.kv"));
    expect(used.map((f) => f.startsWith(`${shm}/`))).toEqual([true, true]);
    expect(await readdir(shm)).toEqual([]);
    expect(seal.spilled).toBe(0);
    await seal.close();
    await expect(stat(shm)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("goes to .plain/ in the L2 folder (0700) when statfs says memory has too little room, with one warning", async () => {
    const { seal, l2, disk, shm, warnings } = await setup("seal-statfs", { shmHeadroomBytes: Number.MAX_SAFE_INTEGER });
    expect(await readdir(disk)).toEqual([]);
    expect((await stat(disk)).mode & 0o777).toBe(0o700);
    const used = [...(await roundTrip(seal, join(l2, "a.kv"))), ...(await roundTrip(seal, join(l2, "b.kv")))];
    expect(used.map((f) => f.startsWith(`${disk}/`))).toEqual([true, true, true, true]);
    expect(await readdir(disk)).toEqual([]);
    expect(await readdir(shm)).toEqual([]);
    expect(seal.spilled).toBe(4);
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0] as string)).toMatchObject({ scratch: disk, reason: expect.stringMatching(/MiB free/) });
  });

  it("is written again in the L2 folder when memory runs out of space; other failures are not retried", async () => {
    const { seal, l2, disk, shm } = await setup("seal-enospc", { shmHeadroomBytes: 0 });
    // llama.cpp on a full tmpfs: a file shorter than it says it wrote (its close is unchecked) ...
    const short = (file: string) => writeFile(file, file.startsWith(shm) ? state.subarray(0, 100) : state);
    const used = await roundTrip(seal, join(l2, "a.kv"), short);
    expect(used.map((f) => (f.startsWith(`${shm}/`) ? "shm" : f.startsWith(`${disk}/`) ? "disk" : f))).toEqual(["shm", "disk", "shm"]);
    // ... or its write error.
    const full = async (file: string) => {
      if (file.startsWith(shm)) throw new Error("write error: No space left on device");
      await writeFile(file, state);
    };
    expect((await roundTrip(seal, join(l2, "b.kv"), full)).length).toBe(3);
    expect(seal.spilled).toBe(2);
    expect([...(await readdir(shm)), ...(await readdir(disk))]).toEqual([]);
    let calls = 0;
    const broken = seal.save(join(l2, "c.kv"), "ctx", async () => {
      calls += 1;
      throw new Error("Failed to save state to file");
    });
    await expect(broken).rejects.toThrow("Failed to save state to file");
    expect(calls).toBe(1);
  });
});
