/**
 * `translateJsonSchema` (pure: no model): strings capped, supported keywords translated, and
 * every schema the grammar cannot enforce refused as `bad_request` on `response_format`.
 */
import { BusError } from "@atlas/bus";
import { describe, expect, it } from "vitest";
import { DEFAULT_MAX_STRING_LENGTH, translateJsonSchema } from "./grammar_schema.ts";

function refusal(schema: unknown): BusError {
  try {
    translateJsonSchema(schema);
  } catch (err) {
    expect(err).toBeInstanceOf(BusError);
    expect((err as BusError).code).toBe("bad_request");
    expect((err as BusError).param).toBe("response_format");
    return err as BusError;
  }
  throw new Error("expected a refusal");
}

describe("translateJsonSchema", () => {
  it("caps strings without maxLength and keeps given bounds", () => {
    expect(translateJsonSchema({ type: "string" })).toEqual({ type: "string", maxLength: DEFAULT_MAX_STRING_LENGTH });
    expect(translateJsonSchema({ type: "string", minLength: 2, maxLength: 5 })).toEqual({ type: "string", minLength: 2, maxLength: 5 });
    expect(translateJsonSchema({ type: "string" }, { maxStringLength: 8 })).toEqual({ type: "string", maxLength: 8 });
    expect(translateJsonSchema({ type: "string", format: "date" })).toEqual({ type: "string", format: "date" });
    // Unknown formats are annotations in JSON Schema 2020-12.
    expect(translateJsonSchema({ type: "string", format: "email", title: "x" })).toEqual({ type: "string", maxLength: 256 });
  });

  it("translates objects, arrays, enums, unions and references", () => {
    const schema = {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      properties: {
        name: { type: "string", description: "who" },
        age: { type: "integer" },
        tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 3 },
        kind: { anyOf: [{ const: 1 }, { type: "null" }] },
        maybe: { type: ["number", "null"] },
        pet: { $ref: "#/$defs/Pet" },
      },
      required: ["name"],
      additionalProperties: false,
      $defs: { Pet: { type: "object", properties: { legs: { type: "integer" } } } },
    };
    expect(translateJsonSchema(schema)).toEqual({
      type: "object",
      properties: {
        name: { type: "string", maxLength: 256 },
        age: { type: "integer" },
        tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 3 },
        kind: { oneOf: [{ const: 1 }, { type: "null" }] },
        maybe: { oneOf: [{ type: "number" }, { type: "null" }] },
        pet: { $ref: "#/$defs/Pet" },
      },
      $defs: { Pet: { type: "object", properties: { legs: { type: "integer" } } } },
    });
  });

  it("treats an object without properties as any object, and {} as any value", () => {
    expect(translateJsonSchema({ type: "object" })).toEqual({ type: "object", properties: {}, additionalProperties: true });
    expect(translateJsonSchema({ type: "object", properties: { x: {} } })).toMatchObject({
      properties: { x: { oneOf: expect.any(Array) } },
    });
  });

  it("refuses what the grammar cannot enforce, naming the keyword and where", () => {
    expect(refusal({ type: "string", pattern: "^a$" }).message).toBe('Unsupported JSON schema keyword "pattern" at the schema root');
    expect(refusal({ type: "object", properties: { n: { type: "integer", minimum: 1 } } }).message).toContain(
      '"minimum" at "properties.n"',
    );
    refusal({ allOf: [{ type: "string" }] });
    refusal({ type: "array", uniqueItems: true });
    refusal({ $ref: "https://example.com/schema" });
    expect(refusal({ type: "object", properties: { a: { $ref: "#/$defs/Nope" } } }).message).toContain('missing definition "Nope"');
    refusal({ type: "date" });
    refusal("not a schema");
    refusal({ type: "string", minLength: 5, maxLength: 2 });
  });
});
