import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configTable } from "./docs.ts";
import { ConfigError, configSchema, loadConfig } from "./mod.ts";

describe("loadConfig", () => {
  it("gives the seed's defaults with an empty environment", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      ATLAS_ENABLED: true,
      ATLAS_MAX_CONCURRENT: 32,
      ATLAS_LATENCY_BUDGET_MS: 5,
      ATLAS_AUTO_SAVE_INTERVAL: 300,
      ATLAS_METRICS_INTERVAL: 1000,
      PORT: 8080,
      ATLAS_NATS_PREFIX: "atlas",
      ATLAS_L2_BUDGET_MB: 256,
      ATLAS_L3_BUDGET_MB: 1024,
    });
    expect(c.NATS_URL).toBeUndefined();
  });

  it("parses booleans, numbers and API keys", () => {
    const c = loadConfig({ ATLAS_ENABLED: "0", PORT: "9000", ATLAS_API_KEYS: "sk-aaaaaaaa:acme, sk-bbbbbbbb:ops:admin,sk-cccccccc" });
    expect(c.ATLAS_ENABLED).toBe(false);
    expect(c.PORT).toBe(9000);
    expect(c.ATLAS_API_KEYS).toEqual([
      { key: "sk-aaaaaaaa", tenant: "acme", admin: false },
      { key: "sk-bbbbbbbb", tenant: "ops", admin: true },
      { key: "sk-cccccccc", tenant: "default", admin: false },
    ]);
  });

  it("lists every bad variable in one error, hiding secrets", () => {
    let err: unknown;
    try {
      loadConfig({ PORT: "70000", ATLAS_ENABLED: "maybe", ATLAS_SLOTS: "0", ATLAS_NATS_PREFIX: "a.*", ATLAS_API_KEYS: "short" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems.map((p) => p.split(":")[0]).sort()).toEqual([
      "ATLAS_API_KEYS",
      "ATLAS_ENABLED",
      "ATLAS_NATS_PREFIX",
      "ATLAS_SLOTS",
      "PORT",
    ]);
    expect(problems.find((p) => p.startsWith("PORT"))).toContain('"70000"');
    expect((err as Error).message).not.toContain("short");
    expect((err as Error).message).toContain("5 problems");
  });

  it("parses ATLAS_GPU and ATLAS_GPU_LAYERS (default: CPU only, auto layers)", () => {
    const c = loadConfig({});
    expect(c.ATLAS_GPU).toBe(false);
    expect(c.ATLAS_GPU_LAYERS).toBe("auto");
    for (const gpu of ["auto", "cuda", "vulkan", "metal"] as const) expect(loadConfig({ ATLAS_GPU: gpu }).ATLAS_GPU).toBe(gpu);
    expect(loadConfig({ ATLAS_GPU: "false" }).ATLAS_GPU).toBe(false);
    expect(loadConfig({ ATLAS_GPU_LAYERS: "max" }).ATLAS_GPU_LAYERS).toBe("max");
    expect(loadConfig({ ATLAS_GPU_LAYERS: "0" }).ATLAS_GPU_LAYERS).toBe(0);
    expect(loadConfig({ ATLAS_GPU_LAYERS: " 33 " }).ATLAS_GPU_LAYERS).toBe(33);
  });

  it("refuses other ATLAS_GPU and ATLAS_GPU_LAYERS values with the allowed ones", () => {
    let err: unknown;
    try {
      loadConfig({ ATLAS_GPU: "rocm", ATLAS_GPU_LAYERS: "-1" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      'ATLAS_GPU: must be one of "auto", "cuda", "vulkan", "metal", "false" (got "rocm")',
      'ATLAS_GPU_LAYERS: must be "auto", "max" or a number of layers (0 to 99999) (got "-1")',
    ]);
    for (const bad of ["1.5", "all", "100000", "0x10"]) expect(() => loadConfig({ ATLAS_GPU_LAYERS: bad })).toThrow(/ATLAS_GPU_LAYERS/);
    for (const bad of ["true", "0", "CUDA", "gpu"]) expect(() => loadConfig({ ATLAS_GPU: bad })).toThrow(/ATLAS_GPU:/);
  });

  it("parses ATLAS_JS_REPLICAS: 1 by default, 1 to 5", () => {
    expect(loadConfig({}).ATLAS_JS_REPLICAS).toBe(1);
    expect(loadConfig({ ATLAS_JS_REPLICAS: "3" }).ATLAS_JS_REPLICAS).toBe(3);
    for (const bad of ["0", "6", "2.5", "three"]) expect(() => loadConfig({ ATLAS_JS_REPLICAS: bad })).toThrow(/ATLAS_JS_REPLICAS/);
  });

  it("treats empty strings as unset", () => {
    const c = loadConfig({ PORT: "  ", NATS_URL: "" });
    expect(c.PORT).toBe(8080);
    expect(c.NATS_URL).toBeUndefined();
  });
});

describe("ATLAS_MODELS and ATLAS_MODEL_ALIASES", () => {
  it("parses name=path[:workers] entries (one worker by default, colons inside the path kept)", () => {
    const c = loadConfig({ ATLAS_MODELS: " alpha=/m/a.gguf:2, beta = /m/b.gguf ,gamma=C:\\m\\g.gguf:0,ft:x/y=/m/x:1.gguf" });
    expect(c.ATLAS_MODELS).toEqual([
      { id: "alpha", path: "/m/a.gguf", workers: 2 },
      { id: "beta", path: "/m/b.gguf", workers: 1 },
      { id: "gamma", path: "C:\\m\\g.gguf", workers: 0 },
      { id: "ft:x/y", path: "/m/x:1.gguf", workers: 1 },
    ]);
    expect(loadConfig({}).ATLAS_MODELS).toBeUndefined();
  });

  it("refuses malformed entries, duplicate names and too many workers, one clear problem each", () => {
    const problem = (value: string) => {
      try {
        loadConfig({ ATLAS_MODELS: value });
      } catch (e) {
        return (e as ConfigError).problems;
      }
      return [];
    };
    expect(problem("alpha")).toEqual(['ATLAS_MODELS: entry 1 ("alpha") is not "name=path" or "name=path:workers" (got "alpha")']);
    expect(problem("alpha=")[0]).toContain('is not "name=path"');
    expect(problem("a b=/m.gguf")[0]).toContain('the model name "a b" must be');
    expect(problem("=/m.gguf")[0]).toContain('the model name "" must be');
    expect(problem("a=/m.gguf,a=/n.gguf")[0]).toContain('the model name "a" is given twice');
    expect(problem("a=/m.gguf:65")[0]).toContain("asks for 65 workers; at most 64");
    expect(problem("a=/m.gguf:40,b=/n.gguf:30")[0]).toContain("asks for 70 workers in all; at most 64");
    expect(problem(" , ")[0]).toContain('must list at least one "name=path[:workers]"');
    expect(problem("a=/m.gguf:1,,")).toEqual([]);
  });

  it("parses aliases and refuses malformed, self-naming or repeated ones", () => {
    expect(loadConfig({ ATLAS_MODEL_ALIASES: "gpt-4o=llama, other=qwen2.5" }).ATLAS_MODEL_ALIASES).toEqual([
      { alias: "gpt-4o", model: "llama" },
      { alias: "other", model: "qwen2.5" },
    ]);
    expect(() => loadConfig({ ATLAS_MODEL_ALIASES: "gpt-4o" })).toThrow(/ATLAS_MODEL_ALIASES: "gpt-4o" is not "alias=model"/);
    expect(() => loadConfig({ ATLAS_MODEL_ALIASES: "a=b=c" })).toThrow(/is not "alias=model"/);
    expect(() => loadConfig({ ATLAS_MODEL_ALIASES: "a=a" })).toThrow(/the alias "a" names itself/);
    expect(() => loadConfig({ ATLAS_MODEL_ALIASES: "a=b,a=c" })).toThrow(/the alias "a" is given twice/);
  });
});

describe("docs/configuration.md", () => {
  it("documents exactly the variables of the schema", () => {
    const doc = readFileSync(new URL("../../../docs/configuration.md", import.meta.url), "utf8");
    const documented = new Set([...doc.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(configSchema.shape).sort());
    // Defaults and descriptions too: regenerate with `node --import tsx libs/config/src/docs.ts`.
    expect(doc).toContain(configTable());
  });
});
