/**
 * Request bodies of the OpenAI endpoints, as zod schemas. Unknown top-level arguments are
 * refused the way OpenAI refuses them; known arguments that ATLAS does not implement yet are
 * refused with a message that says so (never silently ignored).
 *
 * @module
 */
import { AtlasOptions, FunctionName, JsonSchemaObject, MAX_TOP_LOGPROBS, ResponseFormat, SessionId } from "@atlas/contracts";
import { z } from "zod";

// The `atlas` extension and the session id rule are shared with `@atlas/client` (libs/contracts/src/atlas_http.ts).
export { AtlasOptions, SessionId };

const TextPart = z.object({ type: z.literal("text"), text: z.string() }).strict();
const Content = z.union([z.string(), z.array(TextPart).min(1)]);

const notSupported = (what: string) =>
  z
    .unknown()
    .optional()
    .refine((v) => v === undefined || v === null, `${what} is not supported by ATLAS yet`);

/** A call an assistant made, as the client sends it back in the history. */
const ToolCallIn = z
  .object({
    id: z.string().min(1).max(200),
    type: z.literal("function"),
    function: z.object({ name: FunctionName, arguments: z.string().max(1_000_000) }).strict(),
  })
  .strict();

/** One chat message; multimodal messages are refused until they are supported. */
export const ChatMessage = z.discriminatedUnion("role", [
  z.object({ role: z.literal("system"), content: Content, name: z.string().optional() }).strict(),
  z.object({ role: z.literal("developer"), content: Content, name: z.string().optional() }).strict(),
  z.object({ role: z.literal("user"), content: Content, name: z.string().optional() }).strict(),
  z
    .object({
      role: z.literal("assistant"),
      content: Content.nullable().optional(),
      name: z.string().optional(),
      refusal: z.string().nullable().optional(),
      tool_calls: z.array(ToolCallIn).min(1).max(128).nullable().optional(),
      /** Legacy: the one call of the `functions` API. */
      function_call: z
        .object({ name: FunctionName, arguments: z.string().max(1_000_000) })
        .strict()
        .nullable()
        .optional(),
    })
    .strict()
    .refine((m) => m.content != null || m.tool_calls != null || m.function_call != null, {
      message: "An assistant message needs content, tool_calls or function_call",
      path: ["content"],
    }),
  z.object({ role: z.literal("tool"), content: Content, tool_call_id: z.string().min(1).max(200) }).strict(),
  /** Legacy: a function's result in the `functions` API (answers the latest `function_call` of that name). */
  z.object({ role: z.literal("function"), name: FunctionName, content: z.string().nullable() }).strict(),
]);
/** One chat message. */
export type ChatMessage = z.infer<typeof ChatMessage>;

const Stop = z
  .union([z.string().min(1), z.array(z.string().min(1)).max(4)])
  .nullable()
  .optional();

/** A function the model may call: OpenAI's `tools[].function` and the legacy `functions[]`. */
const FunctionDefinition = z
  .object({
    name: FunctionName,
    description: z.string().max(8192).optional(),
    parameters: JsonSchemaObject.optional(),
    /** Accepted: arguments always follow the schema here (a grammar enforces it). */
    strict: z.boolean().nullable().optional(),
  })
  .strict();

/** Arguments shared by both endpoints. */
const common = {
  model: z.string().min(1).max(256),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).strict().nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().min(0).max(1).nullable().optional(),
  n: z.number().int().min(1).max(128).nullable().optional(),
  seed: z
    .number()
    .int()
    .min(-(2 ** 53) + 1)
    .max(2 ** 53 - 1)
    .nullable()
    .optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  max_tokens: z.number().int().min(1).nullable().optional(),
  stop: Stop,
  user: z.string().max(256).optional(),
  /** llama-server's extension: generate until `max_tokens` even past end-of-sequence. */
  ignore_eos: z.boolean().optional(),
  logit_bias: notSupported("logit_bias"),
  atlas: AtlasOptions.optional(),
};

/** `POST /v1/chat/completions`. */
export const ChatCompletionRequest = z
  .object({
    ...common,
    messages: z.array(ChatMessage).min(1),
    max_completion_tokens: z.number().int().min(1).nullable().optional(),
    response_format: ResponseFormat.nullable().optional(),
    logprobs: z.boolean().nullable().optional(),
    top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullable().optional(),
    tools: z
      .array(z.object({ type: z.literal("function"), function: FunctionDefinition }).strict())
      .min(1)
      .max(128)
      .nullable()
      .optional(),
    tool_choice: z
      .union([
        z.enum(["none", "auto", "required"]),
        z.object({ type: z.literal("function"), function: z.object({ name: FunctionName }).strict() }).strict(),
      ])
      .nullable()
      .optional(),
    parallel_tool_calls: z.boolean().nullable().optional(),
    /** Legacy `functions` API: the same as `tools`. */
    functions: z.array(FunctionDefinition).min(1).max(128).nullable().optional(),
    function_call: z
      .union([z.enum(["none", "auto"]), z.object({ name: FunctionName }).strict()])
      .nullable()
      .optional(),
    metadata: z.record(z.string(), z.string()).nullable().optional(),
    store: z.boolean().nullable().optional(),
    service_tier: z.string().nullable().optional(),
    reasoning_effort: notSupported("reasoning_effort"),
    modalities: z.array(z.literal("text")).nullable().optional(),
    audio: notSupported("audio"),
    prediction: notSupported("prediction"),
    web_search_options: notSupported("web_search_options"),
  })
  .strict()
  .refine((r) => r.top_logprobs == null || r.logprobs === true, {
    message: "top_logprobs requires logprobs: true",
    path: ["top_logprobs"],
  })
  .refine((r) => r.tools == null || r.functions == null, { message: "Use tools or the legacy functions, not both", path: ["functions"] })
  .refine((r) => r.tool_choice == null || r.tool_choice === "none" || r.tools != null, {
    message: "tool_choice requires tools",
    path: ["tool_choice"],
  })
  .refine((r) => r.function_call == null || r.function_call === "none" || r.functions != null, {
    message: "function_call requires functions",
    path: ["function_call"],
  })
  .refine(
    (r) => {
      const named = typeof r.tool_choice === "object" && r.tool_choice !== null ? r.tool_choice.function.name : undefined;
      return named === undefined || (r.tools ?? []).some((t) => t.function.name === named);
    },
    { message: "tool_choice names a function that is not in tools", path: ["tool_choice"] },
  )
  .refine(
    (r) => {
      const named = typeof r.function_call === "object" && r.function_call !== null ? r.function_call.name : undefined;
      return named === undefined || (r.functions ?? []).some((f) => f.name === named);
    },
    { message: "function_call names a function that is not in functions", path: ["function_call"] },
  );
/** `POST /v1/chat/completions`. */
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

/** `POST /v1/completions`. */
export const CompletionRequest = z
  .object({
    ...common,
    prompt: z.union([z.string(), z.array(z.string()).min(1).max(128)]),
    echo: z.boolean().nullable().optional(),
    best_of: z.number().int().min(1).max(128).nullable().optional(),
    logprobs: z.number().int().min(0).max(5).nullable().optional(),
    suffix: notSupported("suffix"),
  })
  .strict()
  .refine((r) => r.logprobs == null || r.echo !== true, {
    message: "logprobs with echo (the prompt's own logprobs) is not supported by ATLAS yet; ask without echo",
    path: ["logprobs"],
  })
  .refine((r) => r.best_of == null || r.best_of === (r.n ?? 1), {
    message: "best_of other than n is not supported by ATLAS yet",
    path: ["best_of"],
  });
/** `POST /v1/completions`. */
export type CompletionRequest = z.infer<typeof CompletionRequest>;

/** Text of a message's content (text parts joined). */
export function contentText(content: z.infer<typeof Content>): string {
  return typeof content === "string" ? content : content.map((p) => p.text).join("");
}

/** `stop` as a list. */
export function stopList(stop: z.infer<typeof Stop>): string[] {
  if (stop == null) return [];
  return typeof stop === "string" ? [stop] : stop;
}
