/**
 * Backups and restore on a real cluster: persistence mirrors every session as readable JSON
 * under ATLAS_MEMORY_PATH; after the JetStream store is wiped (server stopped, store folder
 * deleted, server restarted on the same port with the same users and permissions), a restarted persistence brings every session
 * back from the mirror. Corrupt files are reported in health and skipped, never fatal; a
 * session deleted on purpose does not come back.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Health, ServiceName } from "@atlas/contracts";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jsonCall } from "./helpers/http.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ services: ["persistence", "api"], env: { ATLAS_AUTO_SAVE_INTERVAL: "1" } });
});
afterAll(async () => stack?.close());

const root = () => stack.config.ATLAS_MEMORY_PATH;

const api = (method: string, path: string, body?: unknown) => jsonCall(stack.baseUrl, method, path, body);

function doc(layers: number, text = "hi") {
  return {
    version: 1,
    model: "atlas-tiny",
    layers: Array.from({ length: layers }, (_, i) => ({ id: `l${i + 1}`, messages: [{ role: "user", content: `${text} ${i + 1}` }] })),
    metadata: {},
  };
}

async function fileLayers(sessionId: string): Promise<number | undefined> {
  try {
    return (JSON.parse(await readFile(join(root(), "default", `${sessionId}.json`), "utf8")) as { layers: unknown[] }).layers.length;
  } catch {
    return undefined;
  }
}

describe("mirror and restore", () => {
  const sessions: Record<string, number> = { "keep-1": 1, "keep:2": 3, "keep.big": 2 };

  it("mirrors every session as JSON, written atomically, and removes deleted ones", async () => {
    for (const [id, n] of Object.entries(sessions)) {
      const body = id === "keep.big" ? doc(n, "b".repeat(1024 * 1024)) : doc(n);
      expect((await api("PUT", `/v1/atlas/memory/${id}`, body)).status).toBe(201);
    }
    expect(
      (await api("POST", "/v1/atlas/memory/keep-1/layers", { id: "appended", messages: [{ role: "user", content: "x" }] })).status,
    ).toBe(202);
    sessions["keep-1"] = 2;
    expect((await api("PUT", "/v1/atlas/memory/doomed", doc(1))).status).toBe(201);
    await expect.poll(() => fileLayers("doomed"), { timeout: 5000 }).toBe(1);
    expect((await api("DELETE", "/v1/atlas/memory/doomed")).status).toBe(200);
    for (const [id, n] of Object.entries(sessions)) await expect.poll(() => fileLayers(id), { timeout: 5000 }).toBe(n);
    expect(await fileLayers("doomed")).toBeUndefined();
    const text = await readFile(join(root(), "default", "keep:2.json"), "utf8");
    expect(text).toContain('\n  "version": 1,'); // readable: pretty-printed
  });

  it("brings every session back after the JetStream store is wiped, skipping corrupt files", async () => {
    await stack.stop("persistence");
    const dir = join(root(), "default");
    await stack.restartNats({
      whileDown: async (storeDir) => {
        await rm(join(storeDir, "jetstream"), { recursive: true, force: true });
        // Files an operator (or a crash) could leave in the mirror.
        await writeFile(join(dir, "broken.json"), "{not json");
        await writeFile(
          join(dir, "bad-role.json"),
          JSON.stringify({
            ...doc(1),
            session_id: "bad-role",
            tenant: "default",
            created_at: new Date().toISOString(),
            updated_at: new Date().toISOString(),
            layers: [{ id: "a", created_at: new Date().toISOString(), messages: [{ role: "robot", content: "x" }], usage: null }],
          }),
        );
        const elsewhere = JSON.parse(await readFile(join(dir, "keep-1.json"), "utf8"));
        await writeFile(join(dir, "moved.json"), JSON.stringify(elsewhere)); // holds session keep-1, not moved
        await writeFile(join(dir, "half-written.json.1234abcd.tmp"), "{");
        await mkdir(join(root(), "not a tenant!"), { recursive: true });
        await writeFile(join(root(), "not a tenant!", "x.json"), "{}");
      },
    });
    // It came back under the same users and permissions: a service's user needs its own password.
    await expect(connect({ servers: stack.nats.url, user: "persistence", pass: "wrong" })).rejects.toThrow(/authorization/i);
    await stack.start("persistence");

    for (const [id, n] of Object.entries(sessions)) {
      await expect.poll(async () => (await api("GET", `/v1/atlas/memory/${id}`)).json.layers?.length, { timeout: 10_000 }).toBe(n);
    }
    const big = await api("GET", "/v1/atlas/memory/keep.big");
    expect(big.json.layers[1].messages[0].content).toBe(`${"b".repeat(1024 * 1024)} 2`);
    expect((await api("GET", "/v1/atlas/memory/doomed")).status).toBe(404);
    for (const id of ["broken", "bad-role", "moved"]) expect((await api("GET", `/v1/atlas/memory/${id}`)).status).toBe(404);

    // Reported in health, and the service is up.
    // Asked over the api's connection (a service may ask any other's health, not publish its own).
    const instance = stack.running.get("persistence")?.[0]?.bus.instance ?? "";
    const health = await stack.running.get("api")?.[0]?.bus.call(Health, {}, { params: { service: ServiceName.persistence, instance } });
    expect(health?.state).toBe("ok");
    expect(health?.checks.import?.ok).toBe(false);
    expect(health?.checks.import?.detail).toContain("4 corrupt");
    for (const f of ["broken.json", "bad-role.json", "moved.json", "x.json"]) expect(health?.checks.import?.detail).toContain(f);
    const imported = (health?.details?.mirror as { import?: { imported: number } } | undefined)?.import?.imported;
    expect(imported).toBe(3);
    await expect.poll(() => readFile(join(dir, "half-written.json.1234abcd.tmp")).catch(() => "removed")).toBe("removed");

    // And the restored cluster keeps working: appends land again.
    expect((await api("POST", "/v1/atlas/memory/keep:2/layers", { messages: [{ role: "user", content: "after" }] })).status).toBe(202);
    expect((await api("GET", "/v1/atlas/memory/keep:2")).json.layers).toHaveLength(4);
  });
});
