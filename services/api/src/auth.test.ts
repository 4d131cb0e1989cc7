import type { ApiKeyEntry } from "@atlas/config";
import Fastify, { type FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { authPlugin, TenantResolver } from "./auth.ts";
import { ApiError, apiError } from "./errors.ts";

const KEYS: ApiKeyEntry[] = [
  { key: "alpha-key-0001", tenant: "alpha", admin: false },
  { key: "beta-key-0002", tenant: "beta", admin: true },
];

let app: FastifyInstance | undefined;
afterEach(async () => app?.close());

async function build(keys: ApiKeyEntry[] | undefined): Promise<FastifyInstance> {
  const logged: string[] = [];
  app = Fastify({ logger: { level: "trace", stream: { write: (l: string) => void logged.push(l) } } });
  app.decorate("deps", { config: { ATLAS_API_KEYS: keys } } as never);
  app.setErrorHandler((err, _req, reply) => {
    const e = err instanceof ApiError ? err : apiError("internal_error", { requestId: "test" });
    void reply.code(e.status).send(e.toBody());
  });
  await app.register(authPlugin);
  app.get("/health", async (req) => ({ tenant: req.tenant }));
  app.get("/ready", async (req) => ({ tenant: req.tenant }));
  app.get("/v1/models", async (req) => ({ tenant: req.tenant }));
  await app.register(async (child) => {
    child.get("/v1/inside-a-plugin", async (req) => ({ tenant: req.tenant }));
  });
  return app;
}

describe("TenantResolver", () => {
  it("maps a bearer key to its tenant and refuses others", () => {
    const r = new TenantResolver(KEYS);
    expect(r.resolve("Bearer alpha-key-0001")).toBe("alpha");
    expect(r.resolve("bearer   beta-key-0002 ")).toBe("beta");
    expect(() => r.resolve(undefined)).toThrow(/didn't provide an API key/);
    expect(() => r.resolve("Basic alpha-key-0001")).toThrow(/didn't provide/);
    expect(() => r.resolve("Bearer alpha-key-000")).toThrow(/Incorrect API key/);
  });

  it("puts every request in the default tenant when no keys are configured", () => {
    expect(new TenantResolver([]).resolve(undefined)).toBe("default");
    expect(new TenantResolver([]).enforcing).toBe(false);
  });
});

describe("authPlugin", () => {
  it("runs open with the default tenant when no keys are configured", async () => {
    const a = await build(undefined);
    expect((await a.inject({ url: "/v1/models" })).json()).toEqual({ tenant: "default" });
  });

  it("resolves the tenant on every route, also inside plugins, and 401s without a valid key", async () => {
    const a = await build(KEYS);
    const ok = await a.inject({ url: "/v1/inside-a-plugin", headers: { authorization: "Bearer beta-key-0002" } });
    expect(ok.json()).toEqual({ tenant: "beta" });
    for (const headers of [{}, { authorization: "Bearer wrong-key-9999" }]) {
      const r = await a.inject({ url: "/v1/models", headers });
      expect(r.statusCode).toBe(401);
      expect(r.json()).toEqual({
        error: { message: expect.any(String), type: "authentication_error", param: null, code: "invalid_api_key" },
      });
      expect(r.body).not.toContain("wrong-key-9999");
    }
    expect((await a.inject({ url: "/health" })).statusCode).toBe(200);
    expect((await a.inject({ url: "/ready?x=1" })).statusCode).toBe(200);
  });
});
