import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GrammarCache, patchJsonGrammar } from "./grammar.ts";
import { acquireLlama, type LlamaHandle } from "./llama.ts";

describe("patchJsonGrammar", () => {
  it("removes exponents and bounds strings", () => {
    const grammar = [
      'integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?',
      'string-rule ::= "\\"" string-char-rule* "\\""',
    ].join("\n");
    const patched = patchJsonGrammar(grammar, 9);
    expect(patched).not.toMatch(/[eE]\]/);
    expect(patched).toContain("( string-char-rule ){0,9}");
  });
});

describe("GrammarCache", () => {
  let handle: LlamaHandle;
  let cache: GrammarCache;
  beforeAll(async () => {
    handle = await acquireLlama(1);
    cache = new GrammarCache(handle.llama, { maxEntries: 2 });
  });
  afterAll(async () => {
    await handle?.release();
  });

  it("has no grammar for text", async () => {
    expect(await cache.get({ type: "text" })).toBeUndefined();
  });

  it("builds grammars without exponents or unbounded strings, and validates output", async () => {
    const format = {
      type: "json_schema" as const,
      json_schema: { name: "p", schema: { type: "object", properties: { age: { type: "integer" }, x: { type: "number" }, any: {} } } },
    };
    const g = (await cache.get(format))!;
    expect(g.grammar.grammar).not.toMatch(/\[eE\]/);
    expect(g.grammar.grammar).not.toMatch(/string-char-rule\*/);
    expect(g.trimWhitespaceSuffix).toBe(true);
    expect(g.stopStrings).toEqual(["\n\n\n\n"]);
    expect(g.validate('{"age": 3, "x": 1.5, "any": null}')).toEqual({ age: 3, x: 1.5, any: null });
    expect(() => g.validate('{"age": 1.5, "x": 1, "any": 1}')).toThrow();
    expect(await cache.get(format)).toBe(g);
  });

  it("keeps at most maxEntries grammars", async () => {
    for (const maxLength of [1, 2, 3]) {
      await cache.get({ type: "json_schema", json_schema: { name: "s", schema: { type: "string", maxLength } } });
    }
    expect(cache.size).toBe(2);
  });

  it("builds a json_object grammar", async () => {
    const g = (await cache.get({ type: "json_object" }))!;
    expect(g.validate('{"a": [1, "x", {"b": null}]}')).toEqual({ a: [1, "x", { b: null }] });
  });
});
