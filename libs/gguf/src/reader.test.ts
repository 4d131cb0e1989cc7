import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelFingerprint } from "./fingerprint.ts";
import { GgufError, GgufErrorCode, GgufValueType } from "./format.ts";
import { readGgufHeader } from "./reader.ts";
import { type GgufMetadataEntry, rewriteGgufMetadata } from "./rewrite.ts";
import { validateLlamaModel } from "./validate.ts";
import { writeLlamaModel } from "./writer.ts";

let dir: string;
let tiny: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-gguf-reader-"));
  tiny = join(dir, "tiny.gguf");
  await writeLlamaModel(tiny, { seed: 1 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes a copy of the tiny model with edited metadata; returns its path. */
async function variant(name: string, edit: (entries: GgufMetadataEntry[]) => GgufMetadataEntry[]): Promise<string> {
  const path = join(dir, `${name}.gguf`);
  await rewriteGgufMetadata(tiny, path, edit);
  return path;
}

const without = (key: string) => (entries: GgufMetadataEntry[]) => entries.filter((e) => e.key !== key);

async function problemsOf(path: string): Promise<string[]> {
  const result = await validateLlamaModel(path);
  expect(result.ok).toBe(false);
  return result.ok ? [] : [...result.problems];
}

describe("validateLlamaModel", () => {
  it("accepts the generated model", async () => {
    const result = await validateLlamaModel(tiny);
    expect(result).toMatchObject({ ok: true, warnings: [] });
  });

  it("catches a missing feed_forward_length and a missing head_count (llama.cpp aborts on both)", async () => {
    const noFf = await problemsOf(await variant("no-ff", without("llama.feed_forward_length")));
    expect(noFf.join("\n")).toMatch(/"llama\.feed_forward_length" is missing/);
    const noHeads = await problemsOf(await variant("no-heads", without("llama.attention.head_count")));
    expect(noHeads.join("\n")).toMatch(/"llama\.attention\.head_count" is missing/);
  });

  it("catches other missing or inconsistent metadata", async () => {
    const cases: Array<[string, (e: GgufMetadataEntry[]) => GgufMetadataEntry[], RegExp]> = [
      ["no-arch", without("general.architecture"), /"general\.architecture" is missing/],
      ["no-ctx", without("llama.context_length"), /"llama\.context_length" is missing/],
      ["no-eps", without("llama.attention.layer_norm_rms_epsilon"), /layer_norm_rms_epsilon/],
      ["no-tokens", without("tokenizer.ggml.tokens"), /"tokenizer\.ggml\.tokens" is missing/],
      ["no-tokenizer", without("tokenizer.ggml.model"), /"tokenizer\.ggml\.model" is missing/],
      [
        "short-types",
        (e) => e.map((x) => (x.key === "tokenizer.ggml.token_type" ? { ...x, value: (x.value as number[]).slice(1) } : x)),
        /"tokenizer\.ggml\.token_type" is an array of 855, expected an array of 856/,
      ],
      [
        "bad-rope",
        (e) => e.map((x) => (x.key === "llama.rope.dimension_count" ? { ...x, value: 8 } : x)),
        /"llama\.rope\.dimension_count" is "8", expected the head dimension 16/,
      ],
      [
        "wrong-width",
        (e) => e.map((x) => (x.key === "llama.embedding_length" ? { ...x, value: 128 } : x)),
        /Tensor "token_embd\.weight" has shape \[64, 856\], expected \[128, 856\]/,
      ],
      [
        "more-layers",
        (e) => e.map((x) => (x.key === "llama.block_count" ? { ...x, value: 3 } : x)),
        /Tensor "blk\.2\.attn_norm\.weight" is missing/,
      ],
    ];
    for (const [name, edit, pattern] of cases) {
      const problems = await problemsOf(await variant(name, edit));
      expect(problems.join("\n"), name).toMatch(pattern);
    }
  });

  it("is lenient with other architectures but checks their prefixed keys", async () => {
    const rename = (e: GgufMetadataEntry[]) =>
      e.map((x) =>
        x.key === "general.architecture"
          ? { ...x, value: "qwen2" }
          : x.key.startsWith("llama.")
            ? { ...x, key: `qwen2.${x.key.slice("llama.".length)}` }
            : x,
      );
    expect(await validateLlamaModel(await variant("qwen2", rename))).toMatchObject({ ok: true, info: { architecture: "qwen2" } });
    const broken = await variant("qwen2-no-ff", (e) => rename(e).filter((x) => x.key !== "qwen2.feed_forward_length"));
    expect((await problemsOf(broken)).join("\n")).toMatch(/"qwen2\.feed_forward_length" is missing/);
    const unknown = await variant("unknown-arch", (e) =>
      e.map((x) =>
        x.key === "general.architecture"
          ? { ...x, value: "martian" }
          : x.key.startsWith("llama.")
            ? { ...x, key: `martian.${x.key.slice(6)}` }
            : x,
      ),
    );
    const result = await validateLlamaModel(unknown);
    expect(result.warnings.join("\n")).toMatch(/Architecture "martian" is not one llama\.cpp is known to support/);
  });

  it("catches bad magic, an empty file, a missing file and truncation", async () => {
    const bytes = await readFile(tiny);
    const badMagic = join(dir, "bad-magic.gguf");
    await writeFile(badMagic, Buffer.concat([Buffer.from("GGML"), bytes.subarray(4)]));
    expect((await problemsOf(badMagic))[0]).toMatch(/is not a GGUF file: it starts with bytes "47474d4c"/);

    const empty = join(dir, "empty.gguf");
    await writeFile(empty, "");
    expect((await problemsOf(empty))[0]).toMatch(/is empty/);

    expect((await problemsOf(join(dir, "missing.gguf")))[0]).toMatch(/Cannot read ".*missing\.gguf": ENOENT/);

    const header = await readGgufHeader(tiny);
    const cutData = join(dir, "cut-data.gguf");
    await writeFile(cutData, bytes.subarray(0, bytes.length - 1000));
    expect((await problemsOf(cutData)).join("\n")).toMatch(
      /File is truncated: tensor "output\.weight" ends at byte \d+ but the file has \d+ bytes/,
    );

    const cutHeader = join(dir, "cut-header.gguf");
    await writeFile(cutHeader, bytes.subarray(0, Math.floor(header.tensorInfoOffset / 2)));
    expect((await problemsOf(cutHeader))[0]).toMatch(/is truncated: it ends at byte \d+ inside metadata "tokenizer\.ggml\./);

    const wrongVersion = join(dir, "v1.gguf");
    const v1 = Buffer.from(bytes);
    v1.writeUInt32LE(1, 4);
    await writeFile(wrongVersion, v1);
    expect((await problemsOf(wrongVersion))[0]).toMatch(/GGUF version 1; only versions 2 and 3/);
  });
});

describe("readGgufHeader", () => {
  it("throws GgufError with a code", async () => {
    const empty = join(dir, "empty2.gguf");
    await writeFile(empty, "");
    const err = await readGgufHeader(empty).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GgufError);
    expect(err).toMatchObject({ name: "GgufError", code: GgufErrorCode.truncated, path: empty });
    const missing = await readGgufHeader(join(dir, "nope.gguf")).catch((e: unknown) => e);
    expect(missing).toMatchObject({ code: GgufErrorCode.io });
    expect((missing as Error).cause).toMatchObject({ code: "ENOENT" });
    const garbage = join(dir, "garbage.gguf");
    await writeFile(garbage, Buffer.concat([Buffer.from("GGUF"), Buffer.from([3, 0, 0, 0]), Buffer.alloc(16, 0xff)]));
    expect(await readGgufHeader(garbage).catch((e: unknown) => e)).toMatchObject({ code: GgufErrorCode.malformed });
  });

  it("reads metadata larger than its read buffer: long arrays and a long string", async () => {
    const many = Array.from({ length: 200_000 }, (_, i) => `token-${i}-${"é".repeat(i % 7)}`);
    const long = "x".repeat(3 * 1024 * 1024);
    const big = await variant("big", (e) => [
      ...e,
      { key: "test.many", type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: many },
      { key: "test.long", type: GgufValueType.STRING, value: long },
      { key: "test.u64", type: GgufValueType.UINT64, value: 2n ** 60n },
      { key: "test.i8s", type: GgufValueType.ARRAY, itemType: GgufValueType.INT8, value: [-1, 2, -3] },
    ]);
    const h = await readGgufHeader(big);
    expect(h.metadata["test.many"]).toEqual(many);
    expect(h.metadata["test.long"]).toBe(long);
    expect(h.metadata["test.u64"]).toBe(2n ** 60n);
    expect(h.metadata["test.i8s"]).toEqual([-1, 2, -3]);
    expect(h.metadataTypes["test.many"]).toEqual({ type: GgufValueType.ARRAY, itemType: GgufValueType.STRING });
    expect(await validateLlamaModel(big)).toMatchObject({ ok: true });
  });
});

describe("modelFingerprint", () => {
  it("is stable for the same bytes and differs for other weights, hashing whole or sampled", async () => {
    const other = join(dir, "seed2.gguf");
    await writeLlamaModel(other, { seed: 2 });
    const copy = join(dir, "copy.gguf");
    await copyFile(tiny, copy);
    const full = await modelFingerprint(tiny);
    expect(full).toMatch(/^[0-9a-f]{64}$/);
    expect(await modelFingerprint(copy)).toBe(full);
    expect(await modelFingerprint(other)).not.toBe(full);

    const sampled = { fullHashMaxBytes: 0, sampleCount: 8, sampleBytes: 1024 };
    const s1 = await modelFingerprint(tiny, sampled);
    expect(s1).not.toBe(full);
    expect(await modelFingerprint(copy, sampled)).toBe(s1);
    expect(await modelFingerprint(other, sampled)).not.toBe(s1);
  });

  it("throws GgufError for a missing file", async () => {
    await expect(modelFingerprint(join(dir, "nope.gguf"))).rejects.toMatchObject({ name: "GgufError", code: GgufErrorCode.io });
  });
});
