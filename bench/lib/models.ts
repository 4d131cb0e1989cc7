/**
 * The models the benchmark runs: the generated `tiny` and `bench` presets (random weights, real
 * llama.cpp), cached in the system temp folder across runs (`ensureDemoModel` regenerates a file
 * that is missing, invalid or from another generator version).
 *
 * @module
 */
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureDemoModel, readGgufHeader, validateLlamaModel } from "@atlas/gguf";

/** A model file the benchmark serves. */
export interface BenchModel {
  preset: "tiny" | "bench";
  /** The id clients send as `model` (`ATLAS_MODEL_ID`). */
  id: string;
  path: string;
  bytes: number;
  parameters: number | null;
  tensorType: string | null;
  shape: string;
}

/** Where generated models are kept between runs. */
export const MODEL_CACHE_DIR = join(tmpdir(), "atlas-bench-models");

/** Ensures the preset's model exists and describes it. */
export async function benchModel(preset: "tiny" | "bench"): Promise<BenchModel> {
  const path = await ensureDemoModel(MODEL_CACHE_DIR, { preset });
  const [{ size }, check, header] = await Promise.all([stat(path), validateLlamaModel(path), readGgufHeader(path)]);
  const m = header.metadata as Record<string, unknown>;
  const shape = `width ${String(m["llama.embedding_length"])}, ${String(m["llama.block_count"])} layers, ${String(
    m["llama.attention.head_count"],
  )} heads, ff ${String(m["llama.feed_forward_length"])}`;
  const types = new Set(header.tensors.filter((t) => t.dims.length > 1).map((t) => t.typeName));
  return {
    preset,
    id: `atlas-${preset}`,
    path,
    bytes: size,
    parameters: check.ok ? check.info.parameterCount : null,
    tensorType: types.size === 0 ? null : [...types].join("/"),
    shape,
  };
}
