/**
 * `response_format` as a llama.cpp grammar: OpenAI's JSON Schema (a practical subset) translated
 * to node-llama-cpp's JSON schema grammar, made safe for sampling, and a validator for the result.
 *
 * Two pitfalls of node-llama-cpp 3.21.1's JSON grammars are corrected here:
 * - strings without `maxLength` are unbounded, so a weak model fills them until `max_tokens`;
 *   every string (also inside "any JSON" values) gets a length cap when the schema gives none;
 * - numbers admit exponents (`7E59683`), which parse as `Infinity` and fail the library's own
 *   validator for integers; the grammar text is patched to forbid exponents.
 *
 * Everything the grammar cannot enforce (`pattern`, numeric bounds, `allOf`, ...) is refused as a
 * `bad_request` instead of being silently ignored; annotations (`title`, `description`, ...) and
 * unknown string `format`s (annotations in JSON Schema 2020-12) are dropped.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import type { GbnfJsonSchema, Llama, LlamaGrammar } from "node-llama-cpp";

/** What is used of node-llama-cpp's `LlamaJsonSchemaGrammar`. */
type SchemaGrammar = Pick<LlamaGrammar, "grammar" | "stopGenerationTriggers"> & { parse(json: string): unknown };

/** The `response_format` values the engine understands (the contract's `ResponseFormat`). */
export type ResponseFormatSpec =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name: string; schema?: Record<string, unknown> | undefined } };

/** A grammar to sample with, and how to check and finish its output. */
export interface OutputGrammar {
  /** The grammar the sampler enforces. */
  readonly grammar: LlamaGrammar;
  /** Text that ends generation (excluded from the output), from the grammar. */
  readonly stopStrings: readonly string[];
  /** Whether trailing whitespace is removed from the output. */
  readonly trimWhitespaceSuffix: boolean;
  /** Parses and validates a finished output; throws an `Error` naming the mismatch. */
  validate(text: string): unknown;
}

/** Options for {@link GrammarCache}. */
export interface GrammarCacheOptions {
  /** Length cap of strings whose schema has no `maxLength`. Default {@link DEFAULT_MAX_STRING_LENGTH}. */
  maxStringLength?: number;
  /** Grammars kept, least recently used evicted. Default 64. */
  maxEntries?: number;
}

/** Default length cap of JSON strings without `maxLength`. */
export const DEFAULT_MAX_STRING_LENGTH = 256;

const PARAM = "response_format";
const MAX_SCHEMA_NODES = 2000;
const MAX_SCHEMA_DEPTH = 40;

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "$anchor",
  "deprecated",
  "readOnly",
  "writeOnly",
  "contentMediaType",
  "contentEncoding",
]);

const SUPPORTED = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "minProperties",
  "maxProperties",
  "items",
  "prefixItems",
  "additionalItems",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "format",
  "enum",
  "const",
  "anyOf",
  "oneOf",
  "$ref",
  "$defs",
  "definitions",
  "nullable",
  "uniqueItems",
]);

const TYPES = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);
const GRAMMAR_FORMATS = new Set(["date-time", "time", "date"]);

type Json = Record<string, unknown>;

function refuse(message: string): never {
  throw new BusError("bad_request", message, { param: PARAM });
}

function where(path: string): string {
  return path === "" ? "the schema root" : `"${path}"`;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function count(v: unknown, name: string, path: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    refuse(`Invalid JSON schema: "${name}" at ${where(path)} must be a non-negative integer, got "${String(v)}"`);
  }
  return v;
}

/** Translates a client's JSON Schema into the subset node-llama-cpp's grammar generator takes. */
class SchemaTranslator {
  #nodes = 0;
  readonly #refs = new Map<string, string>();
  readonly #maxStringLength: number;

  constructor(maxStringLength: number) {
    this.#maxStringLength = maxStringLength;
  }

  root(schema: unknown): GbnfJsonSchema {
    if (!isObject(schema)) refuse("Invalid JSON schema: the schema must be an object");
    const defsSource = {
      ...(isObject(schema["definitions"]) ? schema["definitions"] : {}),
      ...(isObject(schema["$defs"]) ? schema["$defs"] : {}),
    };
    const defs: Record<string, GbnfJsonSchema> = {};
    for (const [name, def] of Object.entries(defsSource)) defs[name] = this.node(def, `$defs.${name}`, 1);
    const body = this.node(schema, "", 0);
    for (const [name, path] of this.#refs) {
      if (!(name in defs)) refuse(`Invalid JSON schema: "$ref" at ${where(path)} points to a missing definition "${name}"`);
    }
    if (Object.keys(defs).length === 0) return body;
    if ("$ref" in body || "oneOf" in body || ("type" in body && (body.type === "object" || body.type === "array"))) {
      return { ...body, $defs: defs } as GbnfJsonSchema;
    }
    // The grammar generator reads `$defs` only on objects, arrays, oneOf and refs.
    return { oneOf: [body], $defs: defs } as GbnfJsonSchema;
  }

  node(schema: unknown, path: string, depth: number): GbnfJsonSchema {
    if (++this.#nodes > MAX_SCHEMA_NODES) refuse(`Invalid JSON schema: more than ${MAX_SCHEMA_NODES} subschemas`);
    if (depth > MAX_SCHEMA_DEPTH) refuse(`Invalid JSON schema: nested deeper than ${MAX_SCHEMA_DEPTH} levels at ${where(path)}`);
    if (schema === true) return this.any();
    if (schema === false) refuse(`Unsupported JSON schema: "false" at ${where(path)} admits no value`);
    if (!isObject(schema)) refuse(`Invalid JSON schema: expected an object at ${where(path)}, got "${JSON.stringify(schema)}"`);

    for (const key of Object.keys(schema)) {
      if (SUPPORTED.has(key) || ANNOTATIONS.has(key) || key.startsWith("x-")) continue;
      refuse(`Unsupported JSON schema keyword "${key}" at ${where(path)}`);
    }
    if (depth > 0 && (schema["$defs"] !== undefined || schema["definitions"] !== undefined)) {
      refuse(`Unsupported JSON schema: "$defs" are only supported at the schema root, found at ${where(path)}`);
    }
    if (schema["uniqueItems"] === true) refuse(`Unsupported JSON schema keyword "uniqueItems" at ${where(path)}`);

    const nullable = schema["nullable"] === true;
    const inner = this.#constraint(schema, path, depth);
    return nullable ? { oneOf: [inner, { type: "null" }] } : inner;
  }

  #constraint(schema: Json, path: string, depth: number): GbnfJsonSchema {
    const at = (suffix: string) => (path === "" ? suffix : `${path}.${suffix}`);
    const ref = schema["$ref"];
    if (ref !== undefined) {
      if (typeof ref !== "string") refuse(`Invalid JSON schema: "$ref" at ${where(path)} must be a string`);
      const match = /^#\/(?:\$defs|definitions)\/([^/]+)$/.exec(ref);
      if (match === null) refuse(`Unsupported JSON schema "$ref" "${ref}" at ${where(path)}: only "#/$defs/<name>" is supported`);
      this.#refs.set(match[1]!, path);
      return { $ref: `#/$defs/${match[1]}` } as GbnfJsonSchema;
    }
    if (schema["const"] !== undefined) return { const: this.#literal(schema["const"], at("const")) };
    if (schema["enum"] !== undefined) {
      const values = schema["enum"];
      if (!Array.isArray(values) || values.length === 0) refuse(`Invalid JSON schema: "enum" at ${where(path)} must be a non-empty array`);
      return { enum: values.map((v, i) => this.#literal(v, at(`enum.${i}`))) };
    }
    const alternatives = schema["anyOf"] ?? schema["oneOf"];
    if (alternatives !== undefined) {
      if (schema["anyOf"] !== undefined && schema["oneOf"] !== undefined)
        refuse(`Unsupported JSON schema: both "anyOf" and "oneOf" at ${where(path)}`);
      if (schema["type"] !== undefined) refuse(`Unsupported JSON schema: "type" beside "anyOf"/"oneOf" at ${where(path)}`);
      if (!Array.isArray(alternatives) || alternatives.length === 0)
        refuse(`Invalid JSON schema: "anyOf"/"oneOf" at ${where(path)} must be a non-empty array`);
      const key = schema["anyOf"] !== undefined ? "anyOf" : "oneOf";
      return { oneOf: alternatives.map((alt, i) => this.node(alt, at(`${key}.${i}`), depth + 1)) };
    }

    let type = schema["type"];
    if (type === undefined) {
      if (schema["properties"] !== undefined || schema["additionalProperties"] !== undefined) type = "object";
      else if (schema["items"] !== undefined || schema["prefixItems"] !== undefined) type = "array";
      else if (schema["minLength"] !== undefined || schema["maxLength"] !== undefined) type = "string";
      else return this.any();
    }
    if (Array.isArray(type)) {
      if (type.length === 0) refuse(`Invalid JSON schema: "type" at ${where(path)} is an empty array`);
      if (type.length === 1) return this.#typed(schema, type[0], path, depth);
      return { oneOf: type.map((t) => this.#typed(schema, t, path, depth)) };
    }
    return this.#typed(schema, type, path, depth);
  }

  #typed(schema: Json, type: unknown, path: string, depth: number): GbnfJsonSchema {
    const at = (suffix: string) => (path === "" ? suffix : `${path}.${suffix}`);
    if (typeof type !== "string" || !TYPES.has(type)) refuse(`Unsupported JSON schema type "${String(type)}" at ${where(path)}`);
    switch (type) {
      case "string": {
        const format = schema["format"];
        if (typeof format === "string" && GRAMMAR_FORMATS.has(format)) {
          return { type: "string", format: format as "date-time" | "time" | "date" };
        }
        const minLength = count(schema["minLength"], "minLength", path) ?? 0;
        const maxLength = count(schema["maxLength"], "maxLength", path) ?? Math.max(minLength, this.#maxStringLength);
        if (maxLength < minLength)
          refuse(`Invalid JSON schema: "maxLength" ${maxLength} is less than "minLength" ${minLength} at ${where(path)}`);
        return { type: "string", ...(minLength > 0 ? { minLength } : {}), maxLength };
      }
      case "number":
      case "integer":
      case "boolean":
      case "null":
        return { type };
      case "object": {
        const properties = schema["properties"];
        if (properties !== undefined && !isObject(properties))
          refuse(`Invalid JSON schema: "properties" at ${where(path)} must be an object`);
        const required = schema["required"];
        if (required !== undefined && !(Array.isArray(required) && required.every((r) => typeof r === "string"))) {
          refuse(`Invalid JSON schema: "required" at ${where(path)} must be an array of strings`);
        }
        const props: Record<string, GbnfJsonSchema> = {};
        for (const [name, sub] of Object.entries(properties ?? {})) props[name] = this.node(sub, at(`properties.${name}`), depth + 1);
        const additional = schema["additionalProperties"];
        let additionalProperties: boolean | GbnfJsonSchema | undefined;
        if (additional === undefined) additionalProperties = properties === undefined ? true : undefined;
        else if (typeof additional === "boolean") additionalProperties = additional;
        else additionalProperties = this.node(additional, at("additionalProperties"), depth + 1);
        const minProperties = count(schema["minProperties"], "minProperties", path);
        const maxProperties = count(schema["maxProperties"], "maxProperties", path);
        return {
          type: "object",
          properties: props,
          ...(additionalProperties === undefined || additionalProperties === false ? {} : { additionalProperties }),
          ...(minProperties === undefined ? {} : { minProperties }),
          ...(maxProperties === undefined ? {} : { maxProperties }),
        } as GbnfJsonSchema;
      }
      default: {
        // array
        let items = schema["items"];
        let prefix = schema["prefixItems"];
        if (Array.isArray(items)) {
          // Draft-04 tuple form.
          if (prefix !== undefined) refuse(`Unsupported JSON schema: "items" array beside "prefixItems" at ${where(path)}`);
          prefix = items;
          items = schema["additionalItems"];
        }
        if (prefix !== undefined && !Array.isArray(prefix)) refuse(`Invalid JSON schema: "prefixItems" at ${where(path)} must be an array`);
        const minItems = count(schema["minItems"], "minItems", path);
        let maxItems = count(schema["maxItems"], "maxItems", path);
        const prefixItems = prefix?.map((p, i) => this.node(p, at(`prefixItems.${i}`), depth + 1));
        if (items === false) maxItems = prefixItems?.length ?? 0;
        const itemSchema = items === undefined || items === false ? undefined : this.node(items, at("items"), depth + 1);
        return {
          type: "array",
          ...(itemSchema === undefined ? {} : { items: itemSchema }),
          ...(prefixItems === undefined ? {} : { prefixItems }),
          ...(minItems === undefined ? {} : { minItems }),
          ...(maxItems === undefined ? {} : { maxItems }),
        } as GbnfJsonSchema;
      }
    }
  }

  /** Any JSON value. */
  any(): GbnfJsonSchema {
    return {
      oneOf: [
        { type: "string", maxLength: this.#maxStringLength },
        { type: ["number", "boolean", "null"] },
        { type: "object", properties: {}, additionalProperties: true },
        { type: "array" },
      ],
    } as GbnfJsonSchema;
  }

  #literal(v: unknown, path: string): string | number | boolean | null {
    if (v === null || typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isFinite(v))) return v;
    return refuse(`Unsupported JSON schema: only string, number, boolean and null literals are supported at "${path}"`);
  }
}

/**
 * Translates an OpenAI `json_schema` schema into node-llama-cpp's `GbnfJsonSchema`.
 *
 * @throws {BusError} `bad_request` (param `response_format`) for schemas the grammar cannot enforce.
 */
export function translateJsonSchema(schema: unknown, options: { maxStringLength?: number } = {}): GbnfJsonSchema {
  return new SchemaTranslator(options.maxStringLength ?? DEFAULT_MAX_STRING_LENGTH).root(schema);
}

// `([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?` in node-llama-cpp 3.21.1's number rules.
const EXPONENT = / \(\[eE\] \[-\+\]\? \("0" \| \[1-9\] \[0-9\]\{0,15\}\)\)\?/g;
// `string-rule ::= "\"" string-char-rule* "\""`: the unbounded string of "any JSON" values.
const UNBOUNDED_STRING = /string-char-rule\*/g;

/**
 * Patches grammar text generated by node-llama-cpp: numbers lose their exponent part and
 * unbounded strings get a length cap. Throws if the generator's output no longer looks as
 * expected, so a library upgrade cannot silently bring the pitfalls back.
 */
export function patchJsonGrammar(grammar: string, maxStringLength: number): string {
  const hasNumbers = /-number-rule ::=/.test(grammar);
  const patched = grammar.replace(EXPONENT, "").replace(UNBOUNDED_STRING, `( string-char-rule ){0,${maxStringLength}}`);
  if (hasNumbers && /\[eE\]/.test(patched)) throw new Error("Cannot remove exponents from the JSON grammar: unexpected number rule");
  return patched;
}

/**
 * Builds and caches grammars for `response_format`s, keyed by the schema's JSON text. Grammar
 * creation parses GBNF natively (milliseconds for large schemas), so repeated schemas are cheap.
 */
export class GrammarCache {
  readonly #llama: Llama;
  readonly #maxStringLength: number;
  readonly #maxEntries: number;
  readonly #entries = new Map<string, Promise<OutputGrammar>>();

  constructor(llama: Llama, options: GrammarCacheOptions = {}) {
    this.#llama = llama;
    this.#maxStringLength = options.maxStringLength ?? DEFAULT_MAX_STRING_LENGTH;
    this.#maxEntries = options.maxEntries ?? 64;
  }

  /** Number of cached grammars. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The grammar for a response format, or `undefined` for plain text.
   *
   * @throws {BusError} `bad_request` for unsupported schemas.
   */
  async get(format: ResponseFormatSpec): Promise<OutputGrammar | undefined> {
    if (format.type === "text") return undefined;
    let schema: unknown;
    if (format.type === "json_object") schema = { type: "object", additionalProperties: true };
    else {
      schema = format.json_schema.schema;
      if (schema === undefined) schema = { type: "object", additionalProperties: true };
    }
    const key = JSON.stringify(schema);
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, hit);
      return hit;
    }
    // Translation errors are the client's: throw them before anything is cached.
    const translated = translateJsonSchema(schema, { maxStringLength: this.#maxStringLength });
    const job = this.#build(translated);
    this.#entries.set(key, job);
    job.catch(() => this.#entries.delete(key));
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
    return job;
  }

  async #build(schema: GbnfJsonSchema): Promise<OutputGrammar> {
    let validator: SchemaGrammar;
    try {
      // The generic signature infers a literal schema type; ours is only known at run time.
      validator = (await this.#llama.createGrammarForJsonSchema(schema as never)) as SchemaGrammar;
    } catch (err) {
      throw new BusError("bad_request", `Unsupported JSON schema: ${err instanceof Error ? err.message : String(err)}`, {
        param: PARAM,
        cause: err,
      });
    }
    const grammar = await this.#llama.createGrammar({
      grammar: patchJsonGrammar(validator.grammar, this.#maxStringLength),
      stopGenerationTriggers: validator.stopGenerationTriggers,
      trimWhitespaceSuffix: true,
    });
    const stopStrings = grammar.stopGenerationTriggers.map((t) =>
      typeof t === "string" ? t : Array.isArray(t) ? t.join("") : t.toString(),
    );
    return {
      grammar,
      stopStrings,
      trimWhitespaceSuffix: grammar.trimWhitespaceSuffix,
      validate: (text: string) => validator.parse(text),
    };
  }
}
