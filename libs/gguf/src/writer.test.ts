import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgmlType, GgufError, GgufErrorCode, TokenType } from "./format.ts";
import { CHATML_TEMPLATE } from "./model_header.ts";
import { PRESET_DEFAULTS, resolveLlamaModelParams } from "./params.ts";
import { readGgufHeader } from "./reader.ts";
import { validateLlamaModel } from "./validate.ts";
import { buildVocabulary, FIRST_BYTE_TOKEN_ID, SpecialTokenId } from "./vocab.ts";
import { writeLlamaModel } from "./writer.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-gguf-writer-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = async (path: string) =>
  createHash("sha256")
    .update(await readFile(path))
    .digest("hex");

describe("writeLlamaModel", () => {
  it("writes a GGUF v3 llama model that reads back with the metadata and tensors it was given", async () => {
    const path = join(dir, "tiny.gguf");
    const written = await writeLlamaModel(path, { preset: "tiny" });
    const vocab = buildVocabulary();
    expect(written.vocabSize).toBe(vocab.tokens.length);
    expect(written.parameterCount).toBeGreaterThan(100_000);
    expect(written.parameterCount).toBeLessThan(200_000);

    const h = await readGgufHeader(path);
    expect(h.version).toBe(3);
    expect(h.alignment).toBe(32);
    expect(h.fileSize).toBe(written.fileSize);
    expect(h.dataOffset % 32).toBe(0);
    const m = h.metadata;
    expect(m["general.architecture"]).toBe("llama");
    expect(m["general.name"]).toBe("atlas-demo-tiny");
    expect(m["llama.embedding_length"]).toBe(64);
    expect(m["llama.block_count"]).toBe(2);
    expect(m["llama.feed_forward_length"]).toBe(128);
    expect(m["llama.attention.head_count"]).toBe(4);
    expect(m["llama.rope.dimension_count"]).toBe(16);
    expect(m["llama.context_length"]).toBe(4096);
    expect(m["tokenizer.ggml.model"]).toBe("llama");
    expect(m["tokenizer.ggml.add_space_prefix"]).toBe(false);
    expect(m["tokenizer.ggml.eos_token_id"]).toBe(SpecialTokenId.imEnd);
    expect(m["tokenizer.chat_template"]).toBe(CHATML_TEMPLATE);
    const tokens = m["tokenizer.ggml.tokens"] as string[];
    const types = m["tokenizer.ggml.token_type"] as number[];
    expect(tokens).toEqual(vocab.tokens);
    expect(tokens[SpecialTokenId.imEnd]).toBe("<|im_end|>");
    expect(tokens[FIRST_BYTE_TOKEN_ID + 0x0a]).toBe("<0x0A>");
    expect(types[FIRST_BYTE_TOKEN_ID + 0xff]).toBe(TokenType.BYTE);
    expect(types[SpecialTokenId.imStart]).toBe(TokenType.CONTROL);

    expect(h.tensors).toHaveLength(1 + 2 * 9 + 2);
    const embd = h.tensors.find((t) => t.name === "token_embd.weight")!;
    expect(embd.dims).toEqual([64, tokens.length]);
    expect(embd.type).toBe(GgmlType.F32);
    expect(h.tensors.reduce((s, t) => s + t.elementCount, 0)).toBe(written.parameterCount);

    // Data round trip: the attention norm masks the bias channel, the output norm keeps it.
    const bytes = await readFile(path);
    const vector = (name: string) => {
      const t = h.tensors.find((x) => x.name === name)!;
      const start = h.dataOffset + t.offset;
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + t.byteSize!));
    };
    expect([...vector("blk.1.attn_norm.weight")]).toEqual([0, ...new Array(63).fill(1)]);
    expect([...vector("output_norm.weight")]).toEqual(new Array(64).fill(1));
    expect(
      vector("blk.0.ffn_down.weight")
        .subarray(0, 128)
        .every((x) => x === 0),
    ).toBe(true);

    const check = await validateLlamaModel(path);
    expect(check.ok).toBe(true);
    if (check.ok) {
      expect(check.info).toMatchObject({
        architecture: "llama",
        vocabSize: tokens.length,
        parameterCount: written.parameterCount,
        hasChatTemplate: true,
        headCountKv: 4,
      });
      expect(check.warnings).toEqual([]);
    }
  });

  it("is deterministic: same options and seed give the same bytes, another seed other weights", async () => {
    const a = join(dir, "a.gguf");
    const b = join(dir, "b.gguf");
    const c = join(dir, "c.gguf");
    await writeLlamaModel(a, { seed: 42 });
    await writeLlamaModel(b, { seed: 42 });
    await writeLlamaModel(c, { seed: 43 });
    expect(await sha(a)).toBe(await sha(b));
    expect(await sha(c)).not.toBe(await sha(a));
  });

  it("writes F16 and Q8_0 weights, and GQA shapes, that validate", async () => {
    for (const [name, options] of [
      ["f16", { tensorType: "F16" as const }],
      ["q8", { tensorType: "Q8_0" as const, headCountKv: 2, embeddingLength: 96, headCount: 6, feedForwardLength: 160 }],
    ] as const) {
      const path = join(dir, `${name}.gguf`);
      await writeLlamaModel(path, options);
      const check = await validateLlamaModel(path);
      expect(check).toMatchObject({ ok: true });
      const h = await readGgufHeader(path);
      const q = h.tensors.find((t) => t.name === "blk.0.attn_q.weight")!;
      expect(q.type).toBe(options.tensorType === "F16" ? GgmlType.F16 : GgmlType.Q8_0);
      expect(h.tensors.find((t) => t.name === "output_norm.weight")!.type).toBe(GgmlType.F32);
    }
    const h = await readGgufHeader(join(dir, "q8.gguf"));
    expect(h.tensors.find((t) => t.name === "blk.0.attn_k.weight")!.dims).toEqual([96, 32]);
  });

  it("rejects inconsistent options with a GgufError naming the value", async () => {
    const expectInvalid = (fn: () => unknown, message: RegExp) => {
      try {
        fn();
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(GgufError);
        expect((err as GgufError).code).toBe(GgufErrorCode.invalidOptions);
        expect((err as GgufError).name).toBe("GgufError");
        expect((err as Error).message).toMatch(message);
      }
    };
    expectInvalid(() => resolveLlamaModelParams({ tensorType: "Q8_0", embeddingLength: 48, headCount: 4 }), /divisible by 32.*"48"/);
    expectInvalid(() => resolveLlamaModelParams({ embeddingLength: 64, headCount: 5 }), /not divisible by "headCount" 5/);
    expectInvalid(() => resolveLlamaModelParams({ headCount: 4, headCountKv: 3 }), /"headCountKv" 3/);
    expectInvalid(() => resolveLlamaModelParams({ seed: -1 }), /"seed".*"-1"/);
    expectInvalid(() => resolveLlamaModelParams({ preset: "huge" as never }), /Unknown preset "huge"/);
    await expect(writeLlamaModel(join(dir, "never.gguf"), { blockCount: 0 })).rejects.toThrow(/"blockCount"/);
  });

  it("documents preset sizes: bench is about 100M parameters in Q8_0", () => {
    const bench = resolveLlamaModelParams({ preset: "bench" });
    expect(bench).toMatchObject({ ...PRESET_DEFAULTS.bench, preset: "bench", name: "atlas-demo-bench", seed: 1 });
    const d = bench.embeddingLength;
    const perLayer = 4 * d * d + 3 * d * bench.feedForwardLength;
    const total = bench.blockCount * perLayer + 2 * d * buildVocabulary().tokens.length;
    expect(total).toBeGreaterThan(90e6);
    expect(total).toBeLessThan(110e6);
  });

  it("leaves no file behind when aborted or when the directory is missing", async () => {
    const sub = join(dir, "abort");
    await expect(writeLlamaModel(join(sub, "x.gguf"))).rejects.toMatchObject({ code: GgufErrorCode.io });
    const controller = new AbortController();
    controller.abort();
    const path = join(dir, "aborted.gguf");
    await expect(writeLlamaModel(path, { signal: controller.signal })).rejects.toMatchObject({ code: GgufErrorCode.aborted });
    const left = (await readdir(dir)).filter((f) => f.startsWith("aborted"));
    expect(left).toEqual([]);
  });
});
