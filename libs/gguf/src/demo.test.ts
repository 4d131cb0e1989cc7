import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm, stat, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureDemoModel } from "./demo.ts";
import { modelFingerprint } from "./fingerprint.ts";
import { GgufValueType } from "./format.ts";
import { readGgufHeader } from "./reader.ts";
import { rewriteGgufMetadata } from "./rewrite.ts";
import { validateLlamaModel } from "./validate.ts";

const run = promisify(execFile);
const cli = fileURLToPath(new URL("./cli.ts", import.meta.url));
const node = (args: string[]) => run(process.execPath, ["--import", "tsx", cli, ...args], { encoding: "utf8" });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-gguf-demo-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ensureDemoModel", () => {
  it("generates the model once, in a directory it creates, and reuses it", async () => {
    const models = join(dir, "a", "models");
    const [p1, p2] = await Promise.all([ensureDemoModel(models), ensureDemoModel(models, { preset: "tiny" })]);
    expect(p1).toBe(join(models, "atlas-demo-tiny.gguf"));
    expect(p2).toBe(p1);
    expect(await validateLlamaModel(p1)).toMatchObject({ ok: true });
    const before = await stat(p1);
    expect(await ensureDemoModel(models)).toBe(p1);
    expect((await stat(p1)).mtimeMs).toBe(before.mtimeMs);
    expect(await readdir(models)).toEqual(["atlas-demo-tiny.gguf"]);
  });

  it("regenerates a truncated model and one from another generator version", async () => {
    const models = join(dir, "b");
    const path = await ensureDemoModel(models);
    const fingerprint = await modelFingerprint(path);
    await truncate(path, 1000);
    expect(await ensureDemoModel(models)).toBe(path);
    expect(await modelFingerprint(path)).toBe(fingerprint);

    await rewriteGgufMetadata(path, path, (e) => e.map((x) => (x.key === "atlas.generator" ? { ...x, value: "atlas-gguf/0" } : x)));
    expect(await modelFingerprint(path)).not.toBe(fingerprint);
    await ensureDemoModel(models);
    expect(await modelFingerprint(path)).toBe(fingerprint);
  });

  it("keeps one file per chat template and regenerates one whose template differs", async () => {
    const models = join(dir, "t");
    const [chatml, llama, qwen] = await Promise.all([
      ensureDemoModel(models, { preset: "tiny" }),
      ensureDemoModel(models, { preset: "tiny", chatTemplate: "llama3.1" }),
      ensureDemoModel(models, { preset: "tiny", chatTemplate: "qwen2.5" }),
    ]);
    expect([chatml, llama, qwen]).toEqual(
      ["atlas-demo-tiny.gguf", "atlas-demo-tiny-llama3.1.gguf", "atlas-demo-tiny-qwen2.5.gguf"].map((f) => join(models, f)),
    );
    expect(await ensureDemoModel(models, { chatTemplate: "chatml" })).toBe(chatml);
    expect((await readGgufHeader(llama)).metadata["atlas.chat_template"]).toBe("llama3.1");
    expect((await readGgufHeader(qwen)).metadata["general.architecture"]).toBe("qwen2");

    const fingerprint = await modelFingerprint(llama);
    await rewriteGgufMetadata(llama, llama, (e) => e.map((x) => (x.key === "atlas.chat_template" ? { ...x, value: "qwen2.5" } : x)));
    expect(await modelFingerprint(llama)).not.toBe(fingerprint);
    await ensureDemoModel(models, { chatTemplate: "llama3.1" });
    expect(await modelFingerprint(llama)).toBe(fingerprint);

    // A ChatML file that claims another template is regenerated too.
    const chatmlFingerprint = await modelFingerprint(chatml);
    await rewriteGgufMetadata(chatml, chatml, (e) => [...e, { key: "atlas.chat_template", type: GgufValueType.STRING, value: "llama3.1" }]);
    await ensureDemoModel(models);
    expect(await modelFingerprint(chatml)).toBe(chatmlFingerprint);
    expect((await readdir(models)).sort()).toEqual([
      "atlas-demo-tiny-llama3.1.gguf",
      "atlas-demo-tiny-qwen2.5.gguf",
      "atlas-demo-tiny.gguf",
    ]);
  });

  it("is safe when two processes generate at once", async () => {
    const models = join(dir, "c");
    const outputs = await Promise.all([node(["demo", "--dir", models]), node(["demo", "--dir", models])]);
    for (const { stdout } of outputs) expect(JSON.parse(stdout).path).toBe(join(models, "atlas-demo-tiny.gguf"));
    expect(await readdir(models)).toEqual(["atlas-demo-tiny.gguf"]);
    expect(await validateLlamaModel(join(models, "atlas-demo-tiny.gguf"))).toMatchObject({ ok: true });
  });
});

describe("cli", () => {
  it("generates and inspects a model; inspect fails on a bad file", async () => {
    const out = join(dir, "cli.gguf");
    const generated = JSON.parse((await node(["generate", "--preset", "tiny", "--out", out, "--seed", "7"])).stdout);
    expect(generated).toMatchObject({ path: out, params: { seed: 7, preset: "tiny" } });
    const report = JSON.parse((await node(["inspect", out])).stdout);
    expect(report).toMatchObject({ ok: true, info: { architecture: "llama", parameterCount: generated.parameterCount } });
    expect(report.fingerprint).toBe(await modelFingerprint(out));

    await truncate(out, 5000);
    const failed = await node(["inspect", out]).catch((err: { code: number; stdout: string }) => err);
    expect(failed).toMatchObject({ code: 1 });
    expect(JSON.parse((failed as { stdout: string }).stdout).problems[0]).toMatch(/truncated/);

    const bad = await node(["generate", "--out", out, "--seed", "x"]).catch((err: { code: number; stderr: string }) => err);
    expect(bad).toMatchObject({ code: 1 });
    expect((bad as { stderr: string }).stderr).toMatch(/Option "--seed" must be a number, got "x"/);
  });
});
