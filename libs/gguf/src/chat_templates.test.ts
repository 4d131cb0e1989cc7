/**
 * Chat template families: the embedded templates, the vocabulary and header of each family, and
 * that the default (ChatML) model is byte-for-byte what it was before families existed.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHAT_TEMPLATES, CHATML_TEMPLATE, type ChatTemplateFamily, LLAMA_3_1_TEMPLATE, QWEN_2_5_TEMPLATE } from "./chat_templates.ts";
import { GgufErrorCode, TokenType } from "./format.ts";
import { resolveLlamaModelParams } from "./params.ts";
import { readGgufHeader } from "./reader.ts";
import { rewriteGgufMetadata } from "./rewrite.ts";
import { validateLlamaModel } from "./validate.ts";
import { buildVocabulary, FIRST_BYTE_TOKEN_ID, FIRST_PIECE_TOKEN_ID, SpecialTokenId } from "./vocab.ts";
import { writeLlamaModel } from "./writer.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-gguf-templates-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = async (path: string) =>
  createHash("sha256")
    .update(await readFile(path))
    .digest("hex");

// The llama.cpp sources node-llama-cpp ships hold the real templates, copied from the models' tokenizer_config.json.
const llamaCppTemplates = (() => {
  try {
    const main = createRequire(import.meta.url).resolve("node-llama-cpp"); // <package>/dist/index.js
    return join(dirname(dirname(main)), "llama", "llama.cpp", "models", "templates");
  } catch {
    return "";
  }
})();

describe("chat templates", () => {
  it.skipIf(!existsSync(join(llamaCppTemplates, "meta-llama-Llama-3.1-8B-Instruct.jinja")))(
    "are the real Llama 3.1 and Qwen 2.5 Instruct templates, verbatim",
    async () => {
      expect(LLAMA_3_1_TEMPLATE).toBe(await readFile(join(llamaCppTemplates, "meta-llama-Llama-3.1-8B-Instruct.jinja"), "utf8"));
      expect(QWEN_2_5_TEMPLATE).toBe(await readFile(join(llamaCppTemplates, "Qwen-Qwen2.5-7B-Instruct.jinja"), "utf8"));
    },
  );

  it("handle tools in the family's own format", () => {
    for (const text of ["tools", "tool_calls", "ipython", "<|eom_id|>", "<|python_tag|>", '"parameters": ', "<|eot_id|>"]) {
      expect(LLAMA_3_1_TEMPLATE).toContain(text);
    }
    for (const text of ["<tools>", "<tool_call>", "</tool_call>", "<tool_response>", '"arguments": ', "<|im_end|>"]) {
      expect(QWEN_2_5_TEMPLATE).toContain(text);
    }
  });
});

describe("vocabulary per family", () => {
  it("keeps the ChatML vocabulary as it was", () => {
    const v = buildVocabulary();
    expect(buildVocabulary("chatml")).toEqual(v);
    expect(v.tokens.slice(0, 5)).toEqual(["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]);
    expect(v.special).toEqual({ unk: 0, bos: SpecialTokenId.bos, eos: SpecialTokenId.imEnd, eot: SpecialTokenId.imEnd });
    expect(v.firstByteTokenId).toBe(FIRST_BYTE_TOKEN_ID);
    expect(v.firstPieceTokenId).toBe(FIRST_PIECE_TOKEN_ID);
    expect(v.tokens).toHaveLength(856);
  });

  it("puts each family's special tokens after <unk>, then the same bytes and word pieces", () => {
    const chatml = buildVocabulary("chatml");
    const expected: Record<Exclude<ChatTemplateFamily, "chatml">, Record<string, number>> = {
      "llama3.1": {
        "<|begin_of_text|>": 1,
        "<|end_of_text|>": 2,
        "<|start_header_id|>": 3,
        "<|end_header_id|>": 4,
        "<|eom_id|>": 5,
        "<|eot_id|>": 6,
        "<|python_tag|>": 7,
      },
      "qwen2.5": { "<|endoftext|>": 1, "<|im_start|>": 2, "<|im_end|>": 3, "<tool_call>": 4, "</tool_call>": 5 },
    };
    for (const [family, ids] of Object.entries(expected) as Array<[ChatTemplateFamily, Record<string, number>]>) {
      const v = buildVocabulary(family);
      expect(v.specialIds).toEqual(ids);
      const n = Object.keys(ids).length;
      expect(v.firstByteTokenId).toBe(1 + n);
      expect(v.tokens[v.firstByteTokenId]).toBe("<0x00>");
      expect(v.tokens.slice(v.firstPieceTokenId)).toEqual(chatml.tokens.slice(chatml.firstPieceTokenId));
      expect(v.tokens).toHaveLength(chatml.tokens.length - 4 + n);
      for (const [text, id] of Object.entries(ids)) {
        expect(v.tokens[id]).toBe(text);
        expect(v.types[id]).toBe(text.startsWith("<|") ? TokenType.CONTROL : TokenType.USER_DEFINED);
      }
    }
    expect(buildVocabulary("llama3.1").special).toEqual({ unk: 0, bos: 1, eos: 6, eot: 6, eom: 5 });
    expect(buildVocabulary("qwen2.5").special).toEqual({ unk: 0, bos: 1, eos: 3, eot: 3, pad: 1 });
  });
});

describe("writeLlamaModel with a chat template", () => {
  it("writes the default (ChatML) tiny model byte for byte as before chat template families", async () => {
    // Changing these bytes means bumping GENERATOR_VERSION (model_header.ts).
    const a = join(dir, "default.gguf");
    const b = join(dir, "chatml.gguf");
    await writeLlamaModel(a, { preset: "tiny" });
    await writeLlamaModel(b, { preset: "tiny", chatTemplate: "chatml" });
    expect(await sha(a)).toBe("8b7a83887f92f437a1b23ada4f5ec11c9b294a87e57fe9db1aba66ee49e43d4d");
    expect(await sha(b)).toBe(await sha(a));
    const m = (await readGgufHeader(a)).metadata;
    expect(m["atlas.chat_template"]).toBeUndefined();
    expect(m["tokenizer.chat_template"]).toBe(CHATML_TEMPLATE);
  });

  it.each([
    ["llama3.1", "llama", { bos: 1, eos: 6, eot: 6, eom: 5, pad: undefined, addBos: true }],
    ["qwen2.5", "qwen2", { bos: 1, eos: 3, eot: 3, eom: undefined, pad: 1, addBos: false }],
  ] as const)("writes a %s model (architecture %s) that validates, with its template and special token ids", async (family, arch, ids) => {
    const path = join(dir, `${family}.gguf`);
    const written = await writeLlamaModel(path, { preset: "tiny", chatTemplate: family });
    expect(written.params.chatTemplate).toBe(family);
    const vocab = buildVocabulary(family);
    expect(written.vocabSize).toBe(vocab.tokens.length);
    const h = await readGgufHeader(path);
    const m = h.metadata;
    expect(m["general.architecture"]).toBe(arch);
    expect(m["general.name"]).toBe("atlas-demo-tiny");
    expect(m[`${arch}.embedding_length`]).toBe(64);
    expect(m[`${arch}.vocab_size`]).toBe(vocab.tokens.length);
    expect(m["tokenizer.chat_template"]).toBe(CHAT_TEMPLATES[family].template);
    expect(m["atlas.chat_template"]).toBe(family);
    expect(m["tokenizer.ggml.tokens"]).toEqual(vocab.tokens);
    expect(m["tokenizer.ggml.bos_token_id"]).toBe(ids.bos);
    expect(m["tokenizer.ggml.eos_token_id"]).toBe(ids.eos);
    expect(m["tokenizer.ggml.eot_token_id"]).toBe(ids.eot);
    expect(m["tokenizer.ggml.eom_token_id"]).toBe(ids.eom);
    expect(m["tokenizer.ggml.padding_token_id"]).toBe(ids.pad);
    expect(m["tokenizer.ggml.add_bos_token"]).toBe(ids.addBos);
    const check = await validateLlamaModel(path);
    expect(check).toMatchObject({
      ok: true,
      warnings: [],
      info: { architecture: arch, vocabSize: vocab.tokens.length, hasChatTemplate: true },
    });

    // The same weights recipe: same tensors; only the vocabulary rows differ.
    await writeLlamaModel(join(dir, `${family}-chatml.gguf`), { preset: "tiny" });
    const chatml = await readGgufHeader(join(dir, `${family}-chatml.gguf`));
    expect(h.tensors.map((t) => t.name)).toEqual(chatml.tensors.map((t) => t.name));
  });

  it("checks the tensors of a qwen2 model like those of a llama model", async () => {
    const path = join(dir, "qwen-ok.gguf");
    await writeLlamaModel(path, { chatTemplate: "qwen2.5" });
    const broken = join(dir, "qwen-broken.gguf");
    await rewriteGgufMetadata(path, broken, (entries) => entries.filter((e) => e.key !== "qwen2.attention.layer_norm_rms_epsilon"));
    const check = await validateLlamaModel(broken);
    expect(check).toMatchObject({ ok: false, problems: [expect.stringMatching(/"qwen2\.attention\.layer_norm_rms_epsilon" is missing/)] });
  });

  it("rejects an unknown chat template", () => {
    expect(() => resolveLlamaModelParams({ chatTemplate: "llama2" as never })).toThrow(
      expect.objectContaining({ code: GgufErrorCode.invalidOptions, message: expect.stringMatching(/unknown chat template "llama2"/) }),
    );
  });
});
