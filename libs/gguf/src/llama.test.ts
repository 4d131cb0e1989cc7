/**
 * Integration: the generated tiny model in the real engine (node-llama-cpp 3.21.1, one thread).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ChatHistoryItem,
  ChatMLChatWrapper,
  getLlama,
  type Llama,
  LlamaChat,
  type LlamaContext,
  LlamaLogLevel,
  type LlamaModel,
} from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SpecialTokenId } from "./vocab.ts";
import { writeLlamaModel } from "./writer.ts";

let dir: string;
let llama: Llama;
let model: LlamaModel;
let context: LlamaContext;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-gguf-llama-"));
  const path = join(dir, "tiny.gguf");
  await writeLlamaModel(path, { preset: "tiny" });
  // One thread: more threads make decode collapse with the prebuilt binary (docs/configuration.md).
  llama = await getLlama({ gpu: false, maxThreads: 1, logLevel: LlamaLogLevel.error });
  model = await llama.loadModel({ modelPath: path });
  context = await model.createContext({ sequences: 2, contextSize: 1024 });
});

afterAll(async () => {
  await context?.dispose();
  await model?.dispose();
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const history = (text: string): ChatHistoryItem[] => [
  { type: "user", text },
  { type: "model", response: [] },
];

describe("the tiny model in node-llama-cpp", () => {
  it("has ChatML picked by the auto chat wrapper and <|im_end|> as its end-of-generation token", async () => {
    const chat = new LlamaChat({ contextSequence: context.getSequence() });
    try {
      expect(chat.chatWrapper).toBeInstanceOf(ChatMLChatWrapper);
      expect(chat.chatWrapper.wrapperName).toBe("ChatML");
    } finally {
      await chat.dispose({ disposeSequence: true });
    }
    expect(model.tokens.eos).toBe(SpecialTokenId.imEnd);
    expect(model.tokens.bos).toBe(SpecialTokenId.bos);
    expect(model.isEogToken(SpecialTokenId.imEnd as never)).toBe(true);
    expect(model.tokenize("<|im_start|>user\nhi<|im_end|>", true).slice(0, 1)).toEqual([SpecialTokenId.imStart]);
  });

  it("generates text that ends on <|im_end|> before max tokens, the same on two sequences at once", async () => {
    const maxTokens = 200;
    const run = async (prompt: string) => {
      const chat = new LlamaChat({ contextSequence: context.getSequence() });
      try {
        const tokens: number[] = [];
        const result = await chat.generateResponse(history(prompt), {
          maxTokens,
          temperature: 0,
          onToken: (t) => tokens.push(...t),
        });
        return { text: result.response, stopReason: result.metadata.stopReason, tokens };
      } finally {
        await chat.dispose({ disposeSequence: true });
      }
    };
    // Measured for seed 1: "Hello" ends after 67 tokens, the other two after 17 and 10.
    const prompts = ["Hello", "What is the capital of France?", "Write a poem about the sea."];
    const results = [];
    for (const prompt of prompts) results.push(await run(prompt));
    for (const r of results) expect(r.text.trim().length).toBeGreaterThan(0);
    const stopped = results.filter((r) => r.stopReason === "eogToken" && r.tokens.length < maxTokens);
    expect(stopped.length).toBeGreaterThan(0);
    expect(new Set(results.map((r) => r.text)).size).toBe(prompts.length); // replies differ per prompt
    // Mostly printable: word pieces, not byte tokens.
    const printable = results.flatMap((r) => [...r.text]).filter((ch) => ch >= " " && ch <= "~").length;
    expect(printable / results.reduce((n, r) => n + [...r.text].length, 0)).toBeGreaterThan(0.95);

    const [a, b] = await Promise.all([run("Hello"), run("Hello")]);
    expect(a!.text).toBe(results[0]!.text);
    expect(b!.text).toBe(results[0]!.text);
  });

  it("tokenizes any UTF-8 text and detokenizes it back exactly", () => {
    const texts = [
      "Hello, world!",
      "  leading and trailing spaces  ",
      "emoji 😀👍🏽🇯🇵 and CJK 日本語 中文 한국어",
      "tabs\tand\nnewlines\r\n",
      "ünïcödé ß ∑ ≠ ½",
      "<|im_end|> as plain text",
      "\u0000\u0001 control bytes \u007f",
    ];
    for (const text of texts) {
      const tokens = model.tokenize(text);
      expect(model.detokenize(tokens), JSON.stringify(text)).toBe(text);
      expect(tokens).not.toContain(SpecialTokenId.imEnd);
    }
    const plain = "hello world, the model can write a reply";
    expect(model.tokenize(plain).length).toBeLessThan(Buffer.byteLength(plain) / 2);
  });
});
