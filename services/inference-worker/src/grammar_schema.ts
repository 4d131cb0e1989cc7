/**
 * OpenAI's JSON Schema (a practical subset) translated to the `GbnfJsonSchema` that node-llama-cpp
 * generates JSON grammars from; `grammar.ts` turns the result into a grammar and caches it.
 *
 * Every string gets a length cap (`maxLength`) when the schema gives none: node-llama-cpp 3.21.1's
 * strings are otherwise unbounded, and a weak model fills them until `max_tokens`. (Strings nested
 * in "any JSON" values have no schema of their own: `grammar.ts` caps them in the grammar text.)
 *
 * Everything the grammar cannot enforce (`pattern`, numeric bounds, `allOf`, ...) is refused as a
 * `bad_request` instead of being silently ignored; annotations (`title`, `description`, ...) and
 * unknown string `format`s (annotations in JSON Schema 2020-12) are dropped.
 *
 * @module
 */
import { BusError } from "@atlas/bus";
import type { GbnfJsonSchema } from "node-llama-cpp";

/** Default length cap of JSON strings without `maxLength`. */
export const DEFAULT_MAX_STRING_LENGTH = 256;

/** The request parameter that schema errors name. */
export const RESPONSE_FORMAT_PARAM = "response_format";

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
  throw new BusError("bad_request", message, { param: RESPONSE_FORMAT_PARAM });
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
