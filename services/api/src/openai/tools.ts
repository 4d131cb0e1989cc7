/**
 * OpenAI's tools on a chat request, both APIs mapped onto one path (contracts `ToolFunction`,
 * `ToolChoice`, `ToolCall`; the worker's side is `services/inference-worker/src/tools.ts`):
 * - `tools` / `tool_choice` / `parallel_tool_calls`; `tool_choice: "none"` sends no tools at all;
 * - the legacy `functions` / `function_call`: the same tools, one call per reply, answered as
 *   `message.function_call` with `finish_reason: "function_call"`; in the history an assistant's
 *   `function_call` becomes a call with a made-up id, and the next `function` message of that
 *   name its result.
 * The replies' calls, whole and as stream deltas, in OpenAI's shapes.
 *
 * @module
 */
import type { EngineMessage, GenerateEnd, GenerateRequest, ToolCall, ToolCallDelta } from "@atlas/contracts";
import type { ChatCompletion, ChatDelta, ChatFinishReason } from "./responses.ts";
import { type ChatCompletionRequest, type ChatMessage, contentText } from "./schemas.ts";

/** The request's tools as the worker takes them, and whether they came through the legacy API. */
export interface ToolSetup {
  request: Pick<GenerateRequest, "tools" | "tool_choice" | "parallel_tool_calls">;
  legacy: boolean;
}

/** The tools of a chat request (none when it has none or says `none`). */
export function toolSetup(body: ChatCompletionRequest): ToolSetup {
  if (body.functions != null) {
    if (body.function_call === "none") return { request: {}, legacy: true };
    const choice = typeof body.function_call === "object" && body.function_call !== null ? { name: body.function_call.name } : undefined;
    return {
      request: {
        tools: body.functions.map(toolFunction),
        ...(choice === undefined ? {} : { tool_choice: choice }),
        parallel_tool_calls: false,
      },
      legacy: true,
    };
  }
  if (body.tools == null || body.tool_choice === "none") return { request: {}, legacy: false };
  const choice = body.tool_choice;
  return {
    request: {
      tools: body.tools.map((t) => toolFunction(t.function)),
      ...(choice == null
        ? {}
        : { tool_choice: typeof choice === "string" ? (choice as "auto" | "required") : { name: choice.function.name } }),
      ...(body.parallel_tool_calls == null ? {} : { parallel_tool_calls: body.parallel_tool_calls }),
    },
    legacy: false,
  };
}

function toolFunction(f: { name: string; description?: string | undefined; parameters?: Record<string, unknown> | undefined }) {
  return {
    name: f.name,
    ...(f.description === undefined ? {} : { description: f.description }),
    ...(f.parameters === undefined ? {} : { parameters: f.parameters }),
  };
}

/** The chat's messages as the engine takes them: text flattened, legacy function messages as tool calls and results. */
export function engineMessages(messages: readonly ChatMessage[]): EngineMessage[] {
  const out: EngineMessage[] = [];
  const legacyOpen = new Map<string, string>(); // function name → id of its latest unanswered legacy call
  let legacyCount = 0;
  for (const m of messages) {
    switch (m.role) {
      case "assistant": {
        const calls: ToolCall[] = [...(m.tool_calls ?? [])];
        if (m.function_call != null) {
          const id = `call_legacy_${legacyCount++}`;
          legacyOpen.set(m.function_call.name, id);
          calls.push({ id, type: "function", function: m.function_call });
        }
        out.push({
          role: "assistant",
          content: m.content == null ? "" : contentText(m.content),
          ...(calls.length > 0 ? { tool_calls: calls } : {}),
        });
        break;
      }
      case "tool":
        out.push({ role: "tool", content: contentText(m.content), tool_call_id: m.tool_call_id });
        break;
      case "function": {
        const id = legacyOpen.get(m.name);
        legacyOpen.delete(m.name);
        // An answer to no call: a tool message with an id nobody made, which the worker refuses with its reason.
        out.push({ role: "tool", content: m.content ?? "", tool_call_id: id ?? `call_legacy_none_${m.name}` });
        break;
      }
      default:
        out.push({ role: m.role, content: contentText(m.content) });
    }
  }
  return out;
}

/** A stream delta's calls: `tool_calls` pieces, or the legacy `function_call` piece (one call only). */
export function streamedCalls(
  deltas: readonly ToolCallDelta[] | undefined,
  legacy: boolean,
): Pick<ChatDelta, "tool_calls" | "function_call"> {
  if (deltas === undefined || deltas.length === 0) return {};
  if (legacy) {
    const d = deltas[0] as ToolCallDelta;
    return { function_call: { ...(d.name === undefined ? {} : { name: d.name }), arguments: d.arguments } };
  }
  return {
    tool_calls: deltas.map((d) => ({
      index: d.index,
      ...(d.id === undefined ? {} : { id: d.id, type: "function" as const }),
      function: { ...(d.name === undefined ? {} : { name: d.name }), arguments: d.arguments },
    })),
  };
}

/** The reply's message: text (null when the reply is only calls) and the calls, or the legacy `function_call`. */
export function replyMessage(
  text: string,
  calls: readonly ToolCall[] | undefined,
  legacy: boolean,
): ChatCompletion["choices"][number]["message"] {
  const base = { role: "assistant" as const, refusal: null, annotations: [] };
  if (calls === undefined || calls.length === 0) return { ...base, content: text };
  const content = text === "" ? null : text;
  if (legacy) return { ...base, content, function_call: (calls[0] as ToolCall).function };
  return { ...base, content, tool_calls: [...calls] };
}

/** `tool_calls`, or `function_call` for the legacy API. */
export function finishReason(reason: GenerateEnd["finish_reason"], legacy: boolean): ChatFinishReason {
  return reason === "tool_calls" && legacy ? "function_call" : reason;
}
