/**
 * Which llama.cpp binary and device the worker gets (ATLAS_GPU, ATLAS_GPU_LAYERS, the source
 * build of `npm run build:engine`), on the real engine with a generated model and, for the
 * worker's health details, against a real nats-server.
 *
 * This machine has no GPU, so `auto` must come back as the CPU (`gpu: false`). The source build
 * may or may not be there (CI never builds it): the tests that depend on it check the branch the
 * machine is on, both of which are deterministic.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "@atlas/config";
import { GenerateRequest } from "@atlas/contracts";
import { ensureDemoModel } from "@atlas/gguf";
import { createLogger } from "@atlas/log";
import { launchService, type RunningService } from "@atlas/service";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { getLlamaGpuTypes } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Engine, EngineLoadError, type EngineOptions } from "./engine.ts";
import { localBuildsDir, readSourceBuild, SOURCE_BUILD_MANIFEST } from "./llama.ts";
import { workerService } from "./service.ts";

let dir: string;
let modelPath: string;
/** Whether `npm run build:engine` left a build here (never in CI). */
const sourceBuilt = readSourceBuild() !== undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "atlas-backend-"));
  modelPath = await ensureDemoModel(join(dir, "models"), { preset: "tiny" });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const options = (extra: Partial<EngineOptions> = {}): EngineOptions => ({ modelPath, slots: 1, contextSize: 256, threads: 1, ...extra });

/** One short greedy generation: the engine really runs. */
async function generates(engine: Engine): Promise<number> {
  const request = GenerateRequest.parse({
    request_id: "backend",
    model: "tiny",
    prompt: "hello",
    sampling: { temperature: 0, top_p: 1, presence_penalty: 0, frequency_penalty: 0, stop: [], ignore_eos: true, max_tokens: 4 },
  });
  const end = await engine.generate(request, { signal: new AbortController().signal, onChunk: () => {} });
  return end.usage.completion_tokens;
}

describe("Engine backend", () => {
  it("runs on the CPU with gpu false, reporting the binary it loaded and no VRAM", async () => {
    await using engine = await Engine.load(options({ gpu: false }));
    expect(engine.info.backend).toMatchObject({ gpu: false, gpuLayers: 0, threads: 1, binary: sourceBuilt ? "source" : "prebuilt" });
    expect(engine.info.backend.release).not.toBe("");
    expect(await engine.vram()).toBeNull();
    expect(await generates(engine)).toBe(4);
  });

  it("falls back to the CPU with gpu auto on a machine without a GPU", async () => {
    const gpus = (await getLlamaGpuTypes("supported")).filter((g) => g !== false);
    await using engine = await Engine.load(options({ gpu: "auto", gpuLayers: "max" }));
    if (gpus.length > 0) {
      // A machine with a GPU (not this project's): auto takes it.
      expect(engine.info.backend.gpu).not.toBe(false);
      return;
    }
    expect(engine.info.backend.gpu).toBe(false);
    expect(engine.info.backend.gpuLayers).toBe(0);
    expect(await engine.vram()).toBeNull();
    expect(await generates(engine)).toBe(4);
  });

  it("loads the prebuilt binary when asked, whether or not a source build is there", async () => {
    await using engine = await Engine.load(options({ binary: "prebuilt" }));
    expect(engine.info.backend).toMatchObject({ gpu: false, binary: "prebuilt" });
    expect(await generates(engine)).toBe(4);
  });

  it("loads the source build with OpenMP when there is one, and refuses to pretend when there is none", async () => {
    if (sourceBuilt) {
      await using engine = await Engine.load(options({ binary: "source", threads: 2 }));
      expect(engine.info.backend).toMatchObject({ gpu: false, binary: "source", openmp: true, threads: 2 });
      expect(await generates(engine)).toBe(4);
    } else {
      const err = await Engine.load(options({ binary: "source" })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EngineLoadError);
      expect((err as Error).message).toContain("npm run build:engine");
    }
  });

  it.runIf(process.platform !== "darwin")(
    "refuses metal off macOS with a clear error (node-llama-cpp would quietly try auto)",
    async () => {
      const err = await Engine.load(options({ gpu: "metal" })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EngineLoadError);
      expect((err as Error).message).toContain('GPU "metal" needs macOS');
    },
  );

  it("validates gpuLayers", async () => {
    await expect(Engine.load(options({ gpuLayers: -1 }))).rejects.toThrow(/gpuLayers/);
    await expect(Engine.load(options({ gpuLayers: 1.5 }))).rejects.toThrow(/gpuLayers/);
  });
});

describe("readSourceBuild", () => {
  it("reads the manifest of build-engine.mjs and ignores one whose build is gone or damaged", async () => {
    const builds = join(dir, "localBuilds");
    await mkdir(join(builds, "linux-x64-abc"), { recursive: true });
    expect(readSourceBuild(builds)).toBeUndefined();
    const manifest = {
      gpu: false,
      flavour: "native",
      openmp: true,
      cmakeOptions: { GGML_OPENMP: "ON", GGML_NATIVE: "ON" },
      folder: "linux-x64-abc",
      release: "b1",
      builtAt: "2025-01-01T00:00:00.000Z",
    };
    await writeFile(join(builds, SOURCE_BUILD_MANIFEST), JSON.stringify(manifest));
    expect(readSourceBuild(builds)).toEqual({
      gpu: false,
      flavour: "native",
      cmakeOptions: { GGML_OPENMP: "ON", GGML_NATIVE: "ON" },
      folder: "linux-x64-abc",
      release: "b1",
      builtAt: "2025-01-01T00:00:00.000Z",
    });
    await writeFile(join(builds, SOURCE_BUILD_MANIFEST), JSON.stringify({ ...manifest, folder: "linux-x64-gone" }));
    expect(readSourceBuild(builds)).toBeUndefined();
    await writeFile(join(builds, SOURCE_BUILD_MANIFEST), "{ not json");
    expect(readSourceBuild(builds)).toBeUndefined();
  });

  it("looks in node-llama-cpp's localBuilds folder", () => {
    expect(localBuildsDir()).toMatch(/node-llama-cpp[/\\]llama[/\\]localBuilds$/);
  });
});

describe("worker health details", () => {
  let nats: NatsServer;
  beforeAll(async () => {
    nats = await startNatsServer();
  });
  afterAll(async () => {
    await nats?.stop();
  });

  async function worker(env: Record<string, string>): Promise<RunningService> {
    const config = loadConfig({
      NATS_URL: nats.url,
      ATLAS_NATS_PREFIX: `backend${Math.random().toString(36).slice(2, 8)}`,
      ATLAS_MODEL: modelPath,
      ATLAS_SLOTS: "1",
      ATLAS_CTX_SIZE: "256",
      ATLAS_DATA_DIR: join(dir, "data"),
      ATLAS_SHUTDOWN_GRACE_MS: "0",
      ATLAS_KV_SAVE_ON_STOP: "0",
      ...env,
    });
    return launchService(workerService, { config, log: createLogger({ service: "inference-worker", level: "silent" }) });
  }

  it("reports the CPU backend and no VRAM with the default ATLAS_GPU (false)", async () => {
    const w = await worker({});
    try {
      const health = await w.handle.health();
      expect(health.state).toBe("ok");
      expect(health.details?.backend).toMatchObject({
        gpu: false,
        gpu_requested: false,
        gpu_layers: 0,
        binary: sourceBuilt ? "source" : "prebuilt",
        threads: 1,
        vram: null,
      });
    } finally {
      await w.stop();
    }
  });

  it("reports the backend it actually got with ATLAS_GPU=auto: the CPU here", async () => {
    const gpus = (await getLlamaGpuTypes("supported")).filter((g) => g !== false);
    const w = await worker({ ATLAS_GPU: "auto", ATLAS_GPU_LAYERS: "max" });
    try {
      const health = await w.handle.health();
      expect(health.state).toBe("ok");
      const backend = health.details?.backend as { gpu: unknown; gpu_requested: unknown; vram: unknown };
      expect(backend.gpu_requested).toBe("auto");
      if (gpus.length === 0) expect(backend).toMatchObject({ gpu: false, vram: null });
      else expect(backend.gpu).not.toBe(false);
    } finally {
      await w.stop();
    }
  });

  it("stays out of rotation with the reason when the asked GPU cannot load", async () => {
    const w = await worker({ ATLAS_GPU: process.platform === "darwin" ? "vulkan" : "metal" });
    try {
      const health = await w.handle.health();
      expect(health.state).toBe("down");
      expect(health.checks?.model?.detail).toMatch(/GPU "(metal|vulkan)"/);
      expect(health.details?.backend).toEqual({ gpu_requested: process.platform === "darwin" ? "vulkan" : "metal" });
    } finally {
      await w.stop();
    }
  });
});
