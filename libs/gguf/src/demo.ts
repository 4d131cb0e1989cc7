/**
 * `ensureDemoModel`: the generated model every component can fall back to when no real model
 * is configured.
 *
 * @module
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { ChatTemplateFamily } from "./chat_templates.ts";
import { GgufError, GgufErrorCode } from "./format.ts";
import { GENERATOR_VERSION } from "./model_header.ts";
import type { ModelPreset } from "./params.ts";
import { readGgufHeader } from "./reader.ts";
import { validateLlamaModel } from "./validate.ts";
import { writeLlamaModel } from "./writer.ts";

/** Options for {@link ensureDemoModel}. */
export interface EnsureDemoModelOptions {
  /** Which model. Default `"tiny"`. */
  preset?: ModelPreset;
  /** Its chat template family. Default `"chatml"`. */
  chatTemplate?: ChatTemplateFamily;
  /** Aborts generation. */
  signal?: AbortSignal;
}

/**
 * The file name of a demo model: `atlas-demo-<preset>.gguf` with ChatML,
 * `atlas-demo-<preset>-<chatTemplate>.gguf` otherwise (`atlas-demo-tiny-llama3.1.gguf`).
 */
export function demoModelFileName(preset: ModelPreset, chatTemplate: ChatTemplateFamily = "chatml"): string {
  return chatTemplate === "chatml" ? `atlas-demo-${preset}.gguf` : `atlas-demo-${preset}-${chatTemplate}.gguf`;
}

const pending = new Map<string, Promise<string>>();

/**
 * Returns the path of the demo model ({@link demoModelFileName}) in `dir`, generating it (seed 1)
 * when it is absent, fails validation, was made by another generator version or has another
 * preset or chat template in its metadata (`atlas.preset`, `atlas.chat_template`). `dir` is created if
 * needed. Idempotent and safe under concurrency: calls in one process share one generation, and
 * processes racing each other each write a temporary file and rename it into place, so readers
 * only ever see a complete, identical file.
 *
 * @throws {GgufError} when the model cannot be written or the written model does not validate.
 */
export function ensureDemoModel(dir: string, options: EnsureDemoModelOptions = {}): Promise<string> {
  const preset = options.preset ?? "tiny";
  const chatTemplate = options.chatTemplate ?? "chatml";
  const path = join(dir, demoModelFileName(preset, chatTemplate));
  let job = pending.get(path);
  if (job === undefined) {
    job = ensure(dir, path, preset, chatTemplate, options.signal).finally(() => pending.delete(path));
    pending.set(path, job);
  }
  return job;
}

async function isCurrent(path: string, preset: ModelPreset, chatTemplate: ChatTemplateFamily): Promise<boolean> {
  try {
    const { metadata } = await readGgufHeader(path);
    if (metadata["atlas.generator"] !== GENERATOR_VERSION || metadata["atlas.preset"] !== preset || metadata["atlas.seed"] !== 1) {
      return false;
    }
    // ChatML models carry no `atlas.chat_template` (they predate the key).
    if ((metadata["atlas.chat_template"] ?? "chatml") !== chatTemplate) return false;
  } catch {
    return false;
  }
  return (await validateLlamaModel(path)).ok;
}

async function ensure(
  dir: string,
  path: string,
  preset: ModelPreset,
  chatTemplate: ChatTemplateFamily,
  signal: AbortSignal | undefined,
): Promise<string> {
  if (await isCurrent(path, preset, chatTemplate)) return path;
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw new GgufError(GgufErrorCode.io, `Cannot create model directory "${dir}": ${(err as Error).message}`, { cause: err, path: dir });
  }
  await writeLlamaModel(path, { preset, seed: 1, chatTemplate, ...(signal === undefined ? {} : { signal }) });
  const check = await validateLlamaModel(path);
  if (!check.ok) {
    throw new GgufError(GgufErrorCode.malformed, `Generated model "${path}" does not validate: ${check.problems.join("; ")}`, { path });
  }
  return path;
}
