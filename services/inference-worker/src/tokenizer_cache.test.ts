import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeLlamaModel } from "@atlas/gguf";
import { type LlamaModel, resolveChatWrapper, type Tokenizer } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { acquireLlama, type LlamaHandle } from "./llama.ts";
import { renderChat } from "./prompt.ts";
import { cachedTokenizer, MAX_CACHED_CHARS, remembering, type TokenizeFn } from "./tokenizer_cache.ts";

// The generated tiny model, loaded by llama.cpp (its tokenizer is the real one).
let dir: string;
let handle: LlamaHandle;
let model: LlamaModel;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-tokenizer-"));
  const path = join(dir, "tiny.gguf");
  await writeLlamaModel(path, { preset: "tiny" });
  handle = await acquireLlama(1);
  model = await handle.llama.loadModel({ modelPath: path });
});

afterAll(async () => {
  await model?.dispose();
  await handle?.release();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** The model's tokenizer, counting the calls that reach it. */
function counting(inner: Tokenizer): { tokenizer: Tokenizer; calls: () => number } {
  let calls = 0;
  const call = inner as TokenizeFn;
  const counted: TokenizeFn = (text, special, options) => {
    calls += 1;
    return call(text, special, options);
  };
  const tokenizer = Object.assign(counted, {
    detokenize: inner.detokenize,
    isSpecialToken: inner.isSpecialToken,
    isEogToken: inner.isEogToken,
  }) as Tokenizer;
  return { tokenizer, calls: () => calls };
}

describe("cachedTokenizer", () => {
  const pieces: [string, boolean, "trimLeadingSpace" | undefined][] = [
    ["Hello world", false, undefined],
    ["Hello world", false, "trimLeadingSpace"],
    ["  two leading spaces", false, "trimLeadingSpace"],
    ["<|im_start|>user\n", true, undefined],
    ["<|im_start|>user\n", true, "trimLeadingSpace"],
    ["<|im_end|>\n<|im_start|>assistant\n", true, "trimLeadingSpace"],
    ["héllo ✓ 🎉", false, undefined],
  ];

  it("answers what the model's own tokenizer answers, options and special tokens included", () => {
    const cached = cachedTokenizer(model);
    const call = model.tokenizer as TokenizeFn;
    const c = cached as TokenizeFn;
    for (const [text, special, options] of pieces) {
      const expected = call(text, special, options);
      expect(c(text, special, options)).toEqual(expected);
      expect(c(text, special, options)).toEqual(expected); // the remembered answer
    }
    // Special and plain tokenizations of the same text differ, and are kept apart.
    const special = c("<|im_start|>", true);
    const plain = c("<|im_start|>", false);
    expect(special).not.toEqual(plain);
    expect(cachedTokenizer(model)).toBe(cached);
  });

  it("renders a chat to the same tokens as the uncached tokenizer, and remembers its pieces", () => {
    const wrapper = resolveChatWrapper(model);
    expect(wrapper).not.toBeNull();
    const messages = [
      { role: "system" as const, content: "You are terse." },
      { role: "user" as const, content: "Hello there" },
    ];
    const history = [
      { type: "system" as const, text: "You are terse." },
      { type: "user" as const, text: "Hello there" },
      { type: "model" as const, response: [] },
    ];
    const uncached = wrapper!.generateContextState({ chatHistory: history }).contextText.tokenize(model.tokenizer);
    expect(renderChat(model, wrapper!, messages).tokens).toEqual(uncached);

    const { tokenizer, calls } = counting(model.tokenizer);
    const cached = remembering(tokenizer);
    const text = wrapper!.generateContextState({ chatHistory: history }).contextText;
    expect(text.tokenize(cached)).toEqual(uncached);
    const first = calls();
    expect(first).toBeGreaterThan(0);
    expect(text.tokenize(cached)).toEqual(uncached);
    expect(calls()).toBe(first); // every piece came from memory
  });

  it("is bounded: the least recently used piece goes, and long texts are never kept", () => {
    const { tokenizer, calls } = counting(model.tokenizer);
    const cached = remembering(tokenizer, 2) as TokenizeFn;
    cached("a");
    cached("b");
    cached("a"); // a is now the most recent
    cached("c"); // b goes
    const before = calls();
    cached("a");
    cached("c");
    expect(calls()).toBe(before);
    cached("b");
    expect(calls()).toBe(before + 1);

    const long = "x".repeat(MAX_CACHED_CHARS + 1);
    cached(long);
    cached(long);
    expect(calls()).toBe(before + 3);
  });

  it("hands out frozen arrays, so no caller can change a remembered answer", () => {
    const tokens = (cachedTokenizer(model) as TokenizeFn)("frozen text");
    expect(Object.isFrozen(tokens)).toBe(true);
  });
});
