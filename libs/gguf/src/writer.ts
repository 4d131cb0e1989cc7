/**
 * `writeLlamaModel`: writes a small llama-architecture GGUF model with deterministic random
 * weights, for tests and benchmarks that need a real model without downloading one. Streams the
 * header (model_header.ts) and the rows of every tensor (weights.ts) to a temporary file and
 * renames it into place.
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { alignUp, GGUF_DEFAULT_ALIGNMENT, GgufError, GgufErrorCode } from "./format.ts";
import { buildHeader } from "./model_header.ts";
import { type LlamaModelParams, resolveLlamaModelParams, type WriteLlamaModelOptions } from "./params.ts";
import { buildVocabulary } from "./vocab.ts";
import { encodeRow, planTensors, rowBytes, tokenBiases } from "./weights.ts";

/** What {@link writeLlamaModel} wrote. */
export interface WrittenLlamaModel {
  /** The final path. */
  readonly path: string;
  /** File size in bytes. */
  readonly fileSize: number;
  /** Number of weights (all tensor elements). */
  readonly parameterCount: number;
  /** Number of tokens in the vocabulary. */
  readonly vocabSize: number;
  /** The parameters used. */
  readonly params: LlamaModelParams;
}

const CHUNK_BYTES = 1 << 20;

/**
 * Writes a llama-architecture GGUF v3 model with deterministic random weights to `path`.
 *
 * The file is streamed to a temporary file beside `path` (chunks of about 1 MiB), synced and
 * renamed over `path`, so readers never see a partial model and concurrent writers of the same
 * options leave one complete, identical file. Same options and seed give byte-identical files.
 *
 * @throws {GgufError} `invalid_options` for inconsistent options, `io` when writing fails,
 * `aborted` when `options.signal` aborts.
 */
export async function writeLlamaModel(path: string, options: WriteLlamaModelOptions = {}): Promise<WrittenLlamaModel> {
  const params = resolveLlamaModelParams(options);
  const { signal } = options;
  const vocab = buildVocabulary(params.chatTemplate);
  const plans = planTensors(params, tokenBiases(vocab, params));
  const { header, offsets } = buildHeader(params, plans);

  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  let written = 0;
  try {
    fh = await open(tmp, "wx");
    const file = fh;
    const put = async (bytes: Uint8Array) => {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await file.write(bytes, done, bytes.length - done, written + done);
        done += bytesWritten;
      }
      written += bytes.length;
    };
    await put(header);
    const dataStart = header.length;
    const chunk = new Uint8Array(CHUNK_BYTES);
    for (let t = 0; t < plans.length; t++) {
      const plan = plans[t]!;
      const pad = dataStart + offsets[t]! - written;
      if (pad > 0) await put(new Uint8Array(pad));
      const rowLength = plan.dims[0]!;
      const rows = plan.dims.slice(1).reduce((a, b) => a * b, 1);
      const bytesPerRow = rowBytes(plan.type, rowLength);
      const row = new Float32Array(rowLength);
      let used = 0;
      for (let r = 0; r < rows; r++) {
        if (used + bytesPerRow > chunk.length && used > 0) {
          signal?.throwIfAborted();
          await put(chunk.subarray(0, used));
          used = 0;
        }
        plan.fillRow(row, r);
        if (bytesPerRow > chunk.length) {
          const big = new Uint8Array(bytesPerRow);
          encodeRow(plan.type, row, big, 0);
          await put(big);
        } else {
          used = encodeRow(plan.type, row, chunk, used);
        }
      }
      if (used > 0) await put(chunk.subarray(0, used));
    }
    const end = alignUp(written, GGUF_DEFAULT_ALIGNMENT);
    if (end > written) await put(new Uint8Array(end - written));
    signal?.throwIfAborted();
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    if (err instanceof GgufError) throw err;
    if (signal?.aborted) throw new GgufError(GgufErrorCode.aborted, `Writing model "${path}" was aborted`, { cause: err, path });
    const message = err instanceof Error ? err.message : String(err);
    throw new GgufError(GgufErrorCode.io, `Cannot write model "${path}": ${message}`, { cause: err, path });
  }
  const parameterCount = plans.reduce((sum, plan) => sum + plan.dims.reduce((a, b) => a * b, 1), 0);
  return { path, fileSize: written, parameterCount, vocabSize: vocab.tokens.length, params };
}
