/**
 * The OpenAPI document and its page, on a server with API keys: `GET /openapi.json` is an
 * OpenAPI 3.1 document generated from the routes' zod schemas (every public route, its request
 * body's fields, required ones and limits as the contracts define them); `GET /docs` renders it
 * with assets served by the api itself; both need no key, and the routes they describe still do.
 * A body that fails its schema gets OpenAI's 400 naming the field, as before the schemas moved
 * onto the routes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "./helpers/stack.ts";

const KEY = "openapi-key-0001-secret";
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ services: ["api"], env: { ATLAS_API_KEYS: `${KEY}:alpha` } });
}, 60_000);
afterAll(async () => stack?.close());

interface Doc {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, { tags?: string[]; requestBody?: { content: Record<string, { schema: Schema }> } }>>;
  components: { securitySchemes: Record<string, unknown> };
}
interface Schema {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema & { minimum?: number; maximum?: number }>;
}

describe("GET /openapi.json", () => {
  it("is an OpenAPI 3.1 document of every public route, generated from the zod contracts, open without a key", async () => {
    const r = await fetch(`${stack.baseUrl}/openapi.json`);
    expect(r.status).toBe(200);
    const doc = (await r.json()) as Doc;
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.info.title).toBe("ATLAS");
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" });
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        "/health",
        "/metrics",
        "/ready",
        "/v1/atlas/memory",
        "/v1/atlas/memory/{session_id}",
        "/v1/atlas/memory/{session_id}/layers",
        "/v1/atlas/metrics",
        "/v1/atlas/metrics/stream",
        "/v1/atlas/status",
        "/v1/atlas/workers/{id}/drain",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{id}",
      ].sort(),
    );
    // The chat body is the contract's: required fields, the atlas options, OpenAI's limits.
    const chat = doc.paths["/v1/chat/completions"]?.post;
    expect(chat?.tags).toEqual(["OpenAI"]);
    const body = chat?.requestBody?.content["application/json"]?.schema;
    expect(body?.required).toEqual(expect.arrayContaining(["model", "messages"]));
    const temperature = body?.properties?.temperature as { anyOf?: Schema[] } | undefined;
    expect(temperature?.anyOf).toContainEqual({ type: "number", minimum: 0, maximum: 2 });
    expect(Object.keys(body?.properties?.atlas?.properties ?? {})).toEqual(
      expect.arrayContaining(["session_id", "memory_layers", "cache_strategy", "batch_size"]),
    );
    expect(doc.paths["/v1/atlas/memory/{session_id}"]?.put?.requestBody).toBeDefined();
    // Errors are documented in OpenAI's shape, their codes from the registry.
    const errors = (chat as { responses?: Record<string, { content: Record<string, { schema: Schema }> }> } | undefined)?.responses?.[
      "4XX"
    ];
    const error = errors?.content["application/json"]?.schema.properties?.error as Schema | undefined;
    expect(error?.required).toEqual(expect.arrayContaining(["message", "type", "param", "code"]));
    expect((error?.properties?.code as { enum?: string[] } | undefined)?.enum).toEqual(
      expect.arrayContaining(["invalid_value", "model_not_found"]),
    );
    // A model's 200 is OpenAI's model object.
    const model = (
      doc.paths["/v1/models/{id}"]?.get as { responses?: Record<string, { content: Record<string, { schema: Schema }> }> } | undefined
    )?.responses?.["200"]?.content["application/json"]?.schema;
    expect(model?.required).toEqual(expect.arrayContaining(["id", "object", "created", "owned_by"]));
  });
});

describe("GET /docs", () => {
  it("renders the document with assets the api serves itself, open without a key", async () => {
    const page = await fetch(`${stack.baseUrl}/docs`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain("swagger-ui");
    // Every script and stylesheet it loads is local (relative to /docs), and served.
    const assets = [...html.matchAll(/(?:src|href)="([^"]+\.(?:js|css))"/g)].map((m) => m[1] as string);
    expect(assets.length).toBeGreaterThan(0);
    for (const a of assets) {
      expect(a).not.toMatch(/^https?:/);
      const url = new URL(a, `${stack.baseUrl}/docs/`);
      expect((await fetch(url)).status, url.pathname).toBe(200);
    }
  });

  it("leaves the routes it describes behind their key", async () => {
    expect((await fetch(`${stack.baseUrl}/v1/models`)).status).toBe(401);
  });
});

describe("a body that fails its route schema", () => {
  it("gets OpenAI's 400 naming the field, and a body that is not an object invalid_json", async () => {
    const post = (body: string) =>
      fetch(`${stack.baseUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
        body,
      });
    const bad = await post(JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], temperature: 7 }));
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: unknown }).error).toMatchObject({
      type: "invalid_request_error",
      param: "temperature",
      code: "invalid_value",
    });
    const notObject = await post("[1,2]");
    expect(notObject.status).toBe(400);
    expect(((await notObject.json()) as { error: unknown }).error).toMatchObject({ code: "invalid_json" });
  });
});
