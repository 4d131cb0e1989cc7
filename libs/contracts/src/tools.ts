/**
 * Tools (OpenAI's function calling) as they cross the bus and sit in session memory: a tool's
 * definition, the model's call of it, the message that carries a call's result, and the pieces
 * of a call as a stream sends them. The api maps OpenAI's `tools`/`tool_choice` (and the legacy
 * `functions`/`function_call`) onto these (`services/api/src/openai/tools.ts`); the worker renders
 * them with the model's own chat template and constrains each call's arguments with a grammar
 * built from the function's JSON schema (`services/inference-worker/src/tools.ts`).
 *
 * @module
 */
import { z } from "zod";

/** A JSON Schema object, as given by the client. */
export const JsonSchemaObject = z.record(z.string(), z.unknown());

/** A function's name, as OpenAI allows it. */
export const FunctionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "a function name is 1–64 letters, digits, underscores or dashes");

/** A function the model may call. */
export const ToolFunction = z.object({
  name: FunctionName,
  description: z.string().max(8192).optional(),
  /** The arguments' JSON schema (an object schema); absent: no arguments. */
  parameters: JsonSchemaObject.optional(),
});
/** A function the model may call. */
export type ToolFunction = z.infer<typeof ToolFunction>;

/** Which calls the model may or must make: any or none (`auto`), at least one (`required`), this one. */
export const ToolChoice = z.union([z.enum(["auto", "required"]), z.object({ name: FunctionName })]);
/** Which calls the model may or must make. */
export type ToolChoice = z.infer<typeof ToolChoice>;

/** A call the model made, in OpenAI's shape (`arguments` is JSON text). */
export const ToolCall = z.object({
  id: z.string().min(1).max(200),
  type: z.literal("function"),
  function: z.object({ name: FunctionName, arguments: z.string() }),
});
/** A call the model made. */
export type ToolCall = z.infer<typeof ToolCall>;

/**
 * A piece of a call as it streams: the first piece of a call has its `id` and `name`, every piece
 * a part of the `arguments` text; `index` numbers the calls of one reply.
 */
export const ToolCallDelta = z.object({
  index: z.number().int().nonnegative(),
  id: z.string().optional(),
  name: FunctionName.optional(),
  arguments: z.string(),
});
/** A piece of a call as it streams. */
export type ToolCallDelta = z.infer<typeof ToolCallDelta>;

/** The fields a chat message has besides its role and text: an assistant's calls, a tool result's call id. */
export const ToolMessageFields = {
  /** On an assistant message: the calls it made. */
  tool_calls: z.array(ToolCall).min(1).max(128).optional(),
  /** On a `tool` message: the call whose result it is. */
  tool_call_id: z.string().min(1).max(200).optional(),
};
