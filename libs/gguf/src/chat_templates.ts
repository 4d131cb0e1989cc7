/**
 * The chat template families a generated model can carry: the template text embedded as
 * `tokenizer.chat_template`, the special tokens that template needs in the vocabulary, which of
 * them are bos, eos and eot, and the `general.architecture` the family's real models have.
 *
 * `chatml` is the original minimal ChatML template. `llama3.1` and `qwen2.5` are the real
 * templates, verbatim, that Meta ships with Llama-3.1-8B-Instruct and Alibaba with
 * Qwen2.5-7B-Instruct (the same text as llama.cpp's `models/templates/*.jinja`), including their
 * tool / function-calling parts, so node-llama-cpp recognizes them as its specialized wrappers.
 *
 * @module
 */
import { TokenType } from "./format.ts";

/** The chat template families of generated models. */
export const ChatTemplateFamily = {
  /** Minimal ChatML (`<|im_start|>`/`<|im_end|>`), no tools: the default. */
  chatml: "chatml",
  /** Llama 3.1 Instruct's template (tools as JSON, `ipython`/`tool` roles, `<|eom_id|>`, `<|python_tag|>`). */
  llama3_1: "llama3.1",
  /** Qwen 2.5 Instruct's template (Hermes-style `<tools>`, `<tool_call>`, `<tool_response>`). */
  qwen2_5: "qwen2.5",
} as const;

/** A chat template family name. */
export type ChatTemplateFamily = (typeof ChatTemplateFamily)[keyof typeof ChatTemplateFamily];

/** A special token of a family's vocabulary. */
export interface ChatTemplateToken {
  readonly text: string;
  /** `CONTROL` (never read from plain text, hidden on output) or `USER_DEFINED` (always a single token, shown as text). */
  readonly type: TokenType;
}

/** What a family puts into a generated model. */
export interface ChatTemplateSpec {
  readonly family: ChatTemplateFamily;
  /** `tokenizer.chat_template`. */
  readonly template: string;
  /** `general.architecture` (and the prefix of the hyperparameter keys). */
  readonly architecture: "llama" | "qwen2";
  /** Special tokens, in vocabulary order; they follow `<unk>` (id 0) and come before the byte tokens. */
  readonly tokens: readonly ChatTemplateToken[];
  /** Texts of the tokens that are `bos_token_id`, `eos_token_id`, `eot_token_id` (and optionally `eom_token_id`, `padding_token_id`). */
  readonly bos: string;
  readonly eos: string;
  readonly eot: string;
  readonly eom?: string;
  readonly pad?: string;
  /** `tokenizer.ggml.add_bos_token`. */
  readonly addBos: boolean;
}

/**
 * A ChatML chat template (Jinja). node-llama-cpp's `chatWrapper: "auto"` recognizes it as
 * `ChatMLChatWrapper`; llama.cpp's own template detection does too.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * Llama 3.1 Instruct's chat template, verbatim (`tokenizer_config.json` of
 * meta-llama/Llama-3.1-8B-Instruct; llama.cpp `models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja`),
 * ending with a line break like the original. (`String.raw` keeps its `\n` escapes for Jinja;
 * `.slice(1)` drops the line break after the opening backtick.)
 */
export const LLAMA_3_1_TEMPLATE = String.raw`
{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
`.slice(1);

/**
 * Qwen 2.5 Instruct's chat template, verbatim (`tokenizer_config.json` of Qwen/Qwen2.5-7B-Instruct;
 * llama.cpp `models/templates/Qwen-Qwen2.5-7B-Instruct.jinja`).
 */
export const QWEN_2_5_TEMPLATE = String.raw`
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`.slice(1);

const control = (text: string): ChatTemplateToken => ({ text, type: TokenType.CONTROL });

/** Every family, by name. */
export const CHAT_TEMPLATES: Readonly<Record<ChatTemplateFamily, ChatTemplateSpec>> = {
  chatml: {
    family: "chatml",
    template: CHATML_TEMPLATE,
    architecture: "llama",
    // `<s>`/`</s>` are kept for llama compatibility; the models never generate them.
    tokens: [control("<s>"), control("</s>"), control("<|im_start|>"), control("<|im_end|>")],
    bos: "<s>",
    eos: "<|im_end|>",
    eot: "<|im_end|>",
    addBos: true,
  },
  // As in Llama 3.1 Instruct GGUFs: bos <|begin_of_text|> (added), eos = eot = <|eot_id|>, eom <|eom_id|>.
  "llama3.1": {
    family: "llama3.1",
    template: LLAMA_3_1_TEMPLATE,
    architecture: "llama",
    tokens: [
      control("<|begin_of_text|>"),
      control("<|end_of_text|>"),
      control("<|start_header_id|>"),
      control("<|end_header_id|>"),
      control("<|eom_id|>"),
      control("<|eot_id|>"),
      control("<|python_tag|>"),
    ],
    bos: "<|begin_of_text|>",
    eos: "<|eot_id|>",
    eot: "<|eot_id|>",
    eom: "<|eom_id|>",
    addBos: true,
  },
  // As in Qwen2.5 Instruct GGUFs: architecture qwen2, bos = pad = <|endoftext|> (not added),
  // eos = eot = <|im_end|>; <tool_call> and </tool_call> are added tokens that are not special
  // (USER_DEFINED, as llama.cpp's converter types them), <tools>/<tool_response> are plain text.
  "qwen2.5": {
    family: "qwen2.5",
    template: QWEN_2_5_TEMPLATE,
    architecture: "qwen2",
    tokens: [
      control("<|endoftext|>"),
      control("<|im_start|>"),
      control("<|im_end|>"),
      { text: "<tool_call>", type: TokenType.USER_DEFINED },
      { text: "</tool_call>", type: TokenType.USER_DEFINED },
    ],
    bos: "<|endoftext|>",
    eos: "<|im_end|>",
    eot: "<|im_end|>",
    pad: "<|endoftext|>",
    addBos: false,
  },
};

/** The family named `family`; throws a `TypeError` for an unknown name. */
export function chatTemplateSpec(family: ChatTemplateFamily): ChatTemplateSpec {
  const spec = Object.hasOwn(CHAT_TEMPLATES, family) ? CHAT_TEMPLATES[family] : undefined;
  if (spec === undefined) throw new TypeError(`Unknown chat template "${String(family)}"`);
  return spec;
}
