/**
 * The OpenAPI document and its page, on a server with API keys (and a worker on the generated
 * model, and persistence): `GET /openapi.json` is an OpenAPI 3.1 document generated from the
 * routes' zod schemas (every public route, its request body's fields, required ones and limits
 * as the contracts define them, its path and query parameters, and the success objects of the
 * completions and session memory); `GET /docs` renders it with assets served by the api itself;
 * both need no key, and the routes they describe still do. Real answers parse with the zod
 * schemas unchanged (no field the schema does not name). A body, query string or path parameter
 * that fails its schema gets OpenAI's 400 naming the field, as before the schemas moved onto the
 * routes.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { SessionDocument } from "@atlas/contracts";
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import { AppendedLayer, DeletedSession, SessionList, SessionObject } from "../services/api/src/memory/routes.ts";
import { ChatCompletion, ChatCompletionChunk, TextCompletion, TextCompletionChunk } from "../services/api/src/openai/responses.ts";
import { CHROMIUM, launchChromium } from "./helpers/browser.ts";
import { type Stack, startStack } from "./helpers/stack.ts";

const KEY = "openapi-key-0001-secret";
const MODEL = "atlas-tiny";
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ services: ["persistence", "worker", "api"], env: { ATLAS_API_KEYS: `${KEY}:alpha` } });
}, 60_000);
afterAll(async () => stack?.close());

interface Doc {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, unknown> };
}
interface Operation {
  tags?: string[];
  parameters?: { in: string; name: string; required?: boolean; schema: Schema }[];
  requestBody?: { content: Record<string, { schema: Schema }> };
  responses?: Record<string, { description?: string; content?: Record<string, { schema: Schema }> }>;
}
interface Schema {
  type?: string;
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  required?: string[];
  items?: Schema;
  properties?: Record<string, Schema>;
}

async function openapiDocument(): Promise<Doc> {
  const r = await fetch(`${stack.baseUrl}/openapi.json`);
  expect(r.status).toBe(200);
  return (await r.json()) as Doc;
}

/** A request with the key; the status and the parsed JSON body. */
async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const r = await fetch(`${stack.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: r.status, json: await r.json() };
}

/** The JSON events of a streamed completion (the stream ends with `data: [DONE]`). */
async function events(path: string, body: unknown): Promise<unknown[]> {
  const r = await fetch(`${stack.baseUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(r.headers.get("content-type")).toMatch(/^text\/event-stream/);
  const data = (await r.text())
    .split("\n\n")
    .filter((e) => e !== "")
    .map((e) => e.replace(/^data: /, ""));
  expect(data.pop()).toBe("[DONE]");
  return data.map((d) => JSON.parse(d) as unknown);
}

/** `json` is valid for `schema`, and has no field the schema does not name (zod strips them: the parse would differ). */
function conforms(schema: z.ZodType, json: unknown): void {
  const r = schema.safeParse(json);
  expect(r.error?.issues ?? []).toEqual([]);
  expect(r.data).toStrictEqual(json);
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
    const error = chat?.responses?.["4XX"]?.content?.["application/json"]?.schema.properties?.error;
    expect(error?.required).toEqual(expect.arrayContaining(["message", "type", "param", "code"]));
    expect(error?.properties?.code?.enum).toEqual(expect.arrayContaining(["invalid_value", "model_not_found"]));
    // A model's 200 is OpenAI's model object.
    const model = doc.paths["/v1/models/{id}"]?.get?.responses?.["200"]?.content?.["application/json"]?.schema;
    expect(model?.required).toEqual(expect.arrayContaining(["id", "object", "created", "owned_by"]));
  });
});

describe("the success schemas", () => {
  it("describe the completions as JSON and as an event stream, and the session memory objects", async () => {
    const doc = await openapiDocument();
    const ok = (path: string, method: string, status: string, type = "application/json") =>
      doc.paths[path]?.[method]?.responses?.[status]?.content?.[type]?.schema;
    const chat = ok("/v1/chat/completions", "post", "200");
    expect(chat?.required).toEqual(expect.arrayContaining(["id", "object", "created", "model", "choices", "usage"]));
    expect(chat?.properties?.object?.enum).toEqual(["chat.completion"]);
    const choice = chat?.properties?.choices?.items;
    expect(choice?.required).toEqual(expect.arrayContaining(["index", "message", "finish_reason", "logprobs"]));
    expect(choice?.properties?.message?.required).toEqual(expect.arrayContaining(["role", "content"]));
    expect(Object.keys(chat?.properties ?? {})).toContain("atlas");
    expect(ok("/v1/chat/completions", "post", "200", "text/event-stream")?.properties?.object?.enum).toEqual(["chat.completion.chunk"]);
    expect(doc.paths["/v1/chat/completions"]?.post?.responses?.["200"]?.description).toContain("[DONE]");
    expect(ok("/v1/completions", "post", "200")?.properties?.object?.enum).toEqual(["text_completion"]);
    expect(ok("/v1/completions", "post", "200", "text/event-stream")?.properties?.choices).toBeDefined();
    expect(ok("/v1/atlas/memory", "get", "200")?.required).toEqual(expect.arrayContaining(["object", "data", "has_more"]));
    expect(ok("/v1/atlas/memory/{session_id}", "get", "200")?.required).toEqual(expect.arrayContaining(["session_id", "layers"]));
    expect(ok("/v1/atlas/memory/{session_id}", "put", "201")?.properties?.object?.enum).toEqual(["atlas.memory.session"]);
    expect(ok("/v1/atlas/memory/{session_id}", "delete", "200")?.properties?.deleted?.enum).toEqual([true]);
    expect(ok("/v1/atlas/memory/{session_id}/layers", "post", "202")?.properties?.object?.enum).toEqual(["atlas.memory.layer"]);
    // Path and query parameters are the schemas that validate them.
    const read = doc.paths["/v1/atlas/memory/{session_id}"]?.get?.parameters ?? [];
    expect(read.find((p) => p.in === "path" && p.name === "session_id")).toMatchObject({ required: true, schema: { maxLength: 128 } });
    expect(read.find((p) => p.in === "query" && p.name === "tenant")).toBeDefined();
    const limit = doc.paths["/v1/atlas/memory"]?.get?.parameters?.find((p) => p.in === "query" && p.name === "limit");
    expect(limit?.schema).toMatchObject({ minimum: 1, maximum: 100 });
  });

  it("match real answers: a chat and a completion, streamed or not, and every session memory object", async () => {
    const chat = await api("POST", "/v1/chat/completions", {
      model: MODEL,
      messages: [{ role: "user", content: "Say hello." }],
      max_tokens: 8,
      n: 2,
      atlas: { session_id: "openapi-chat" },
    });
    expect(chat.status).toBe(200);
    conforms(ChatCompletion, chat.json);
    expect((chat.json as ChatCompletion).atlas?.session_id).toBe("openapi-chat");
    const plain = await api("POST", "/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
    conforms(ChatCompletion, plain.json);
    expect(plain.json).not.toHaveProperty("atlas");
    const text = await api("POST", "/v1/completions", { model: MODEL, prompt: ["Once", "Twice"], max_tokens: 4, echo: true });
    expect(text.status).toBe(200);
    conforms(TextCompletion, text.json);
    // Streamed: every event's data is a chunk of the documented shape, then [DONE].
    const stream = { stream: true, stream_options: { include_usage: true }, max_tokens: 4, atlas: {} };
    const chatEvents = await events("/v1/chat/completions", { model: MODEL, messages: [{ role: "user", content: "Hi" }], ...stream });
    for (const e of chatEvents) conforms(ChatCompletionChunk, e);
    expect((chatEvents.at(-1) as ChatCompletionChunk).usage?.total_tokens).toBeGreaterThan(0);
    const textEvents = await events("/v1/completions", { model: MODEL, prompt: "Once", echo: true, ...stream });
    for (const e of textEvents) conforms(TextCompletionChunk, e);

    const layer = { messages: [{ role: "user", content: "hello" }] };
    const put = await api("PUT", "/v1/atlas/memory/openapi-doc", { version: 1, layers: [layer] });
    expect(put.status).toBe(201);
    conforms(SessionObject, put.json);
    const appended = await api("POST", "/v1/atlas/memory/openapi-doc/layers", layer);
    expect(appended.status).toBe(202);
    conforms(AppendedLayer, appended.json);
    const read = await api("GET", "/v1/atlas/memory/openapi-doc");
    expect(read.status).toBe(200);
    conforms(SessionDocument, read.json);
    const list = await api("GET", "/v1/atlas/memory?limit=1");
    expect(list.status).toBe(200);
    conforms(SessionList, list.json);
    const deleted = await api("DELETE", "/v1/atlas/memory/openapi-doc");
    expect(deleted.status).toBe(200);
    conforms(DeletedSession, deleted.json);
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

describe("a query string or path parameter that fails its route schema", () => {
  it("gets OpenAI's 400 naming it, with the value and the rule", async () => {
    const limit = await api("GET", "/v1/atlas/memory?limit=0");
    expect(limit.status).toBe(400);
    expect((limit.json as { error: { message: string } }).error).toMatchObject({
      type: "invalid_request_error",
      param: "limit",
      code: "invalid_value",
      message: expect.stringMatching(/^Invalid request at 'limit': /),
    });
    const session = await api("GET", "/v1/atlas/memory/bad%20id");
    expect(session.status).toBe(400);
    expect((session.json as { error: unknown }).error).toEqual({
      message: 'Invalid session_id "bad id": must be 1-128 characters of [A-Za-z0-9._:-]',
      type: "invalid_request_error",
      param: "session_id",
      code: "invalid_value",
    });
    const tenant = await api("DELETE", "/v1/atlas/memory/fine?tenant=no%20such");
    expect(tenant.status).toBe(400);
    expect((tenant.json as { error: unknown }).error).toMatchObject({ param: "tenant", code: "invalid_value" });
  });
});

describe("the document, checked by a validator and against docs/api.md", () => {
  it("validates as OpenAPI 3.1 (@seriousme/openapi-schema-validator), and the validator rejects a broken copy", async () => {
    const doc = (await openapiDocument()) as unknown as Record<string, unknown>;
    const validator = new Validator();
    const r = await validator.validate(doc);
    expect(r.errors ?? []).toEqual([]);
    expect(r.valid).toBe(true);
    expect(validator.version).toBe("3.1");
    // Not a validator that passes anything: the same document without its `info` fails.
    const { info: _, ...broken } = doc;
    expect((await new Validator().validate(broken)).valid).toBe(false);
  });

  it("describes every route in docs/api.md's table of routes (path parameters by position, not name)", async () => {
    const routes = documentedRoutes(readFileSync(new URL("../docs/api.md", import.meta.url), "utf8"));
    // The table is parsed, not skipped: it lists the completions, the models, status, memory, metrics and probes.
    expect(routes.length).toBeGreaterThanOrEqual(10);
    expect(routes).toContainEqual({ method: "post", path: "/v1/chat/completions", family: false });
    // Pages for a browser, not API operations: hidden from the document on purpose (metrics/routes.ts).
    const pages = ["get /dashboard"];
    for (const p of pages) expect(routes.map((r) => `${r.method} ${r.path}`)).toContain(p);
    const doc = await openapiDocument();
    expect(
      missingRoutes(
        doc,
        routes.filter((r) => !pages.includes(`${r.method} ${r.path}`)),
      ),
    ).toEqual([]);
    // The check finds a route the document lacks.
    const { "/v1/completions": _, ...fewer } = doc.paths;
    expect(missingRoutes({ ...doc, paths: fewer }, routes)).toContain("post /v1/completions");
  });
});

interface DocumentedRoute {
  method: string;
  path: string;
  /** `GET /v1/atlas/memory…`: the routes under the path, described elsewhere (at least one is in the document). */
  family: boolean;
}

/**
 * The routes in docs/api.md's table whose first column is "method and path": each cell is
 * `` `METHOD /path` `` items; `` `…/metrics/stream` `` continues the item before it (same method,
 * the path from its last segment named so on), `` `METHOD /path…` `` names a family of routes.
 */
function documentedRoutes(markdown: string): DocumentedRoute[] {
  const lines = markdown.split("\n");
  const header = lines.findIndex((l) => /^\|\s*method and path\s*\|/.test(l));
  expect(header, "docs/api.md has a table headed 'method and path'").toBeGreaterThanOrEqual(0);
  const routes: DocumentedRoute[] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith("|")) break;
    const cell = line.split(/(?<!\\)\|/)[1] ?? "";
    for (const [, item] of cell.matchAll(/`([^`]+)`/g)) {
      const text = (item as string).trim();
      const family = text.endsWith("…");
      const bare = family ? text.slice(0, -1) : text;
      const full = /^([A-Z]+) (\/\S*)$/.exec(bare);
      if (full) {
        routes.push({ method: (full[1] as string).toLowerCase(), path: full[2] as string, family });
        continue;
      }
      const prev = routes.at(-1);
      const rest = /^…(\/[^/\s]+)(\S*)$/.exec(bare);
      const at = prev && rest ? prev.path.lastIndexOf(rest[1] as string) : -1;
      expect(at, `docs/api.md: cannot read the route \`${text}\``).toBeGreaterThanOrEqual(0);
      routes.push({ method: prev?.method as string, path: `${prev?.path.slice(0, at)}${rest?.[1]}${rest?.[2]}`, family });
    }
  }
  return routes;
}

/** The routes (`get /path`) with no operation in the document; `{id}` and `{session_id}` compare equal. */
function missingRoutes(doc: Doc, routes: DocumentedRoute[]): string[] {
  const shape = (path: string) => path.replace(/\{[^}]*\}/g, "{}");
  const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${shape(path)}`));
  return routes
    .filter(({ method, path, family }) => {
      const route = `${method} ${shape(path)}`;
      return family ? !operations.some((o) => o.startsWith(route)) : !operations.includes(route);
    })
    .map(({ method, path }) => `${method} ${path}`);
}

describe("GET /docs in a browser", () => {
  it("renders the document with Swagger UI, every request to the api itself, and shows the chat completions operation", async (ctx) => {
    if (!existsSync(CHROMIUM)) ctx.skip(`no Chromium at ${CHROMIUM} (set CHROMIUM_BIN): /docs was not rendered in a browser`);
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
      const host = new URL(stack.baseUrl).host;
      const external: string[] = [];
      const problems: string[] = [];
      page.on("pageerror", (e) => problems.push(e.message));
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      // Any request to another host is recorded and refused (never sent out).
      await page.route("**/*", (route) => {
        const url = new URL(route.request().url());
        if (/^(https?|wss?):$/.test(url.protocol) && url.host !== host) {
          external.push(url.href);
          return route.abort();
        }
        return route.continue();
      });
      const served: string[] = [];
      page.on("response", (r) => {
        if (r.ok()) served.push(new URL(r.url()).pathname);
      });

      const res = await page.goto(`${stack.baseUrl}/docs`);
      expect(res?.status()).toBe(200);
      const chat = page.locator('.opblock-post .opblock-summary-path[data-path="/v1/chat/completions"]');
      await chat.waitFor({ state: "visible", timeout: 15_000 });
      await expect.poll(() => page.locator(".info .title").textContent()).toContain("ATLAS");
      // The script, its stylesheet and the document all came from the api.
      expect(served.some((p) => /^\/docs\/static\/.+\.js$/.test(p))).toBe(true);
      expect(served.some((p) => /^\/docs\/static\/.+\.css$/.test(p))).toBe(true);
      expect(served).toContain("/docs/json");
      expect(external).toEqual([]);
      expect(problems).toEqual([]);
      const artifacts = new URL("artifacts/", import.meta.url);
      await mkdir(artifacts, { recursive: true });
      await page.screenshot({ path: fileURLToPath(new URL("docs.png", artifacts)) });
    } finally {
      await browser.close();
    }
  });
});
