/**
 * Integration: the tiny model with the real Llama 3.1 and Qwen 2.5 chat templates in the real
 * engine (node-llama-cpp 3.21.1, one thread). node-llama-cpp must recognize each template as its
 * specialized chat wrapper (as the inference worker resolves it: `resolveChatWrapper(model)`), the
 * special tokens must be single tokens, and `LlamaChat` must run function calling on the model.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import {
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatWrapper,
  type ChatWrapperGenerateContextStateOptions,
  type ChatWrapperGeneratedContextState,
  getLlama,
  JinjaTemplateChatWrapper,
  type Llama,
  Llama3_1ChatWrapper,
  LlamaChat,
  type LlamaContext,
  LlamaLogLevel,
  type LlamaModel,
  LlamaText,
  QwenChatWrapper,
  resolveChatWrapper,
  type Token,
} from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChatTemplateFamily, chatTemplateSpec } from "./chat_templates.ts";
import { ensureDemoModel } from "./demo.ts";
import { TokenType } from "./format.ts";
import { buildVocabulary } from "./vocab.ts";

let dir: string;
let llama: Llama;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-gguf-tools-"));
  // One thread: more threads make decode collapse with the prebuilt binary (docs/configuration.md).
  llama = await getLlama({ gpu: false, maxThreads: 1, logLevel: LlamaLogLevel.error });
});

afterAll(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

const WEATHER = {
  get_weather: {
    description: "Get the current weather in a city",
    params: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
} as const satisfies ChatModelFunctions;

const history = (text: string): ChatHistoryItem[] => [
  { type: "system", text: "You are a helpful assistant." },
  { type: "user", text },
  { type: "model", response: [] },
];

/**
 * The wrapper the worker resolves, with Llama 3.1's "Today Date" fixed: `Llama3_1ChatWrapper` puts
 * the current date into every prompt, which would change the replies of this test every day.
 * (Detection is unaffected: these settings apply only to the wrapper resolved.)
 */
const resolveFixedDate = (model: LlamaModel): ChatWrapper =>
  resolveChatWrapper(model, { customWrapperSettings: { "llama3.1": { todayDate: new Date("2024-07-26T00:00:00Z") } } });

/**
 * `wrapper`, except that every reply starts in function calling mode: node-llama-cpp's
 * `functionCall.initiallyEngaged` (with nothing that disengages it) makes `LlamaChat` put the
 * wrapper's call prefix (`settings.functions.call.prefix`) after the prompt and let the model
 * generate only a function name (grammar over the given functions) and then its params (JSON
 * schema grammar). What OpenAI's `tool_choice: "required"` needs; with only the named function in
 * `functions`, `tool_choice: {type: "function", ...}`.
 */
function forceFunctionCall(wrapper: ChatWrapper): ChatWrapper {
  const forced = Object.create(wrapper) as ChatWrapper;
  forced.generateContextState = (options: ChatWrapperGenerateContextStateOptions): ChatWrapperGeneratedContextState => {
    const { contextText, stopGenerationTriggers, ignoreStartText } = wrapper.generateContextState(options);
    return {
      contextText,
      stopGenerationTriggers,
      ...(ignoreStartText === undefined ? {} : { ignoreStartText }),
      functionCall: { initiallyEngaged: true, disengageInitiallyEngaged: [] },
    };
  };
  return forced;
}

const FAMILIES = [
  {
    family: "llama3.1",
    Wrapper: Llama3_1ChatWrapper,
    wrapperName: "Llama 3.1",
    callPrefix: "<function=",
    toolsText: "You have access to the following functions",
    // <function=get_weather>{"city": "..."}</function><|eom_id|>
    parseCall: (raw: string) => ({
      name: raw.slice("<function=".length, raw.indexOf(">")),
      params: JSON.parse(raw.slice(raw.indexOf(">") + 1, raw.lastIndexOf("</function><|eom_id|>"))) as unknown,
    }),
  },
  {
    family: "qwen2.5",
    Wrapper: QwenChatWrapper,
    wrapperName: "Qwen",
    callPrefix: '<tool_call>\n{"name": "',
    toolsText: "<tools>",
    // <tool_call>\n{"name": "get_weather", "arguments": {"city": "..."}}\n</tool_call>
    parseCall: (raw: string) => {
      const { name, arguments: params } = JSON.parse(raw.slice("<tool_call>".length, raw.lastIndexOf("</tool_call>"))) as {
        name: string;
        arguments: unknown;
      };
      return { name, params };
    },
  },
] as const satisfies ReadonlyArray<{ family: ChatTemplateFamily } & Record<string, unknown>>;

describe.each(FAMILIES)(
  "a tiny model with the $family template in node-llama-cpp",
  ({ family, Wrapper, wrapperName, callPrefix, toolsText, parseCall }) => {
    let model: LlamaModel;
    let context: LlamaContext;
    let path: string;
    const vocab = buildVocabulary(family);
    const spec = chatTemplateSpec(family);

    beforeAll(async () => {
      path = await ensureDemoModel(join(dir, "models"), { preset: "tiny", chatTemplate: family });
      model = await llama.loadModel({ modelPath: path });
      context = await model.createContext({ sequences: 1, contextSize: 2048 });
    });

    afterAll(async () => {
      await context?.dispose();
      await model?.dispose();
    });

    it(`is named atlas-demo-tiny-${family}.gguf and resolves to ${Wrapper.name}, as the worker resolves it`, async () => {
      expect(basename(path)).toBe(`atlas-demo-tiny-${family}.gguf`);
      expect((model.fileInfo.metadata.general as { architecture?: string }).architecture).toBe(spec.architecture);
      const wrapper = resolveChatWrapper(model); // services/inference-worker/src/engine.ts
      expect(wrapper).toBeInstanceOf(Wrapper);
      expect(wrapper).not.toBeInstanceOf(JinjaTemplateChatWrapper);
      expect(wrapper.wrapperName).toBe(wrapperName);
      expect(LlamaText(wrapper.settings.functions.call.prefix).toString()).toBe(callPrefix);
      // Recognized by its template (rendering it equals the wrapper's output), not by its file name.
      const byTemplate = resolveChatWrapper({
        bosString: model.tokens.bosString,
        fileInfo: model.fileInfo,
        tokenizer: model.tokenizer,
        llama,
      });
      expect(byTemplate).toBeInstanceOf(Wrapper);
      // LlamaChat's own "auto" resolution agrees.
      const chat = new LlamaChat({ contextSequence: context.getSequence() });
      try {
        expect(chat.chatWrapper).toBeInstanceOf(Wrapper);
      } finally {
        await chat.dispose({ disposeSequence: true });
      }
    });

    it("has bos, eos and eot of the family, and its special tokens are single tokens", () => {
      expect(model.tokens.bos).toBe(vocab.special.bos);
      expect(model.tokens.eos).toBe(vocab.special.eos);
      expect(model.tokens.eot).toBe(vocab.special.eot);
      expect(model.tokens.bosString).toBe(spec.bos);
      expect(model.tokens.eosString).toBe(spec.eos);
      expect(model.isEogToken(vocab.special.eot as Token)).toBe(true);
      if (vocab.special.eom !== undefined) expect(model.isEogToken(vocab.special.eom as Token)).toBe(true);
      for (const { text, type } of spec.tokens) {
        const id = vocab.specialIds[text] as Token;
        expect(model.tokenize(text, true), text).toEqual([id]);
        if (type === TokenType.CONTROL) {
          expect(model.isSpecialToken(id), text).toBe(true);
          expect(model.tokenize(text, false).length, `${text} as plain text`).toBeGreaterThan(1);
          expect(model.detokenize([id], true)).toBe(text);
        } else {
          // USER_DEFINED (Qwen's <tool_call>, </tool_call>): one token even in plain text, printed as text.
          expect(model.tokenize(text, false), text).toEqual([id]);
          expect(model.detokenize([id])).toBe(text);
        }
      }
    });

    it("replies and ends on its eos token", async () => {
      const chat = new LlamaChat({ contextSequence: context.getSequence(), chatWrapper: resolveFixedDate(model) });
      try {
        const stops: string[] = [];
        for (const prompt of ["Hello", "What is the capital of France?", "Write a poem about the sea."]) {
          const r = await chat.generateResponse(history(prompt), { maxTokens: 200, temperature: 0 });
          stops.push(r.metadata.stopReason);
        }
        expect(stops).toContain("eogToken");
      } finally {
        await chat.dispose({ disposeSequence: true });
      }
    });

    it("renders functions in the family's format and runs LlamaChat.generateResponse with them", async () => {
      const wrapper = resolveFixedDate(model);
      expect(wrapper).toBeInstanceOf(Wrapper);
      const { contextText } = wrapper.generateContextState({ chatHistory: history("Weather in Paris?"), availableFunctions: WEATHER });
      expect(contextText.toString()).toContain(toolsText);
      expect(contextText.toString()).toContain('"get_weather"');

      const chat = new LlamaChat({ contextSequence: context.getSequence(), chatWrapper: wrapper });
      try {
        const r = await chat.generateResponse(history("What is the weather in Paris?"), {
          functions: WEATHER,
          maxTokens: 120,
          temperature: 0,
        });
        expect(["eogToken", "maxTokens", "functionCalls"]).toContain(r.metadata.stopReason);
        // Random weights: whether it calls is up to chance; a call that was made has valid params.
        for (const call of r.functionCalls ?? []) {
          expect(call.functionName).toBe("get_weather");
          expect(typeof call.params.city).toBe("string");
        }
      } finally {
        await chat.dispose({ disposeSequence: true });
      }
    });

    it("calls a function deterministically when the reply starts in function calling mode", async () => {
      // A string without maxLength may never end: "\"" is just one of ~860 tokens to a random model.
      const functions = {
        get_weather: {
          ...WEATHER.get_weather,
          params: { ...WEATHER.get_weather.params, properties: { city: { type: "string", maxLength: 16 } } },
        },
      } as const satisfies ChatModelFunctions;
      const chat = new LlamaChat({ contextSequence: context.getSequence(), chatWrapper: forceFunctionCall(resolveFixedDate(model)) });
      try {
        const r = await chat.generateResponse(history("What is the weather in Paris?"), {
          functions,
          maxTokens: 200,
          temperature: 0,
          maxParallelFunctionCalls: 1,
        });
        expect(r.metadata.stopReason).toBe("functionCalls");
        expect(r.functionCalls).toHaveLength(1);
        const call = r.functionCalls![0]!;
        expect(call.functionName).toBe("get_weather");
        expect(typeof call.params.city).toBe("string");
        expect(call.params.city.length).toBeLessThanOrEqual(16);
        // The call as it goes into the history: the family's own syntax, with the params as JSON.
        const raw = LlamaText.fromJSON(call.raw).toString();
        expect(raw.startsWith(`${callPrefix}get_weather`)).toBe(true);
        expect(parseCall(raw)).toEqual({ name: "get_weather", params: { city: call.params.city } });
      } finally {
        await chat.dispose({ disposeSequence: true });
      }
    });
  },
);
