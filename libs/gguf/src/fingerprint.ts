/**
 * `modelFingerprint`: a cheap, stable SHA-256 id of a model file (whole-file hash for small
 * files, header plus samples of the tensor data for large ones).
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { open, stat } from "node:fs/promises";
import { fileError } from "./decode.ts";
import { GgufError, GgufErrorCode } from "./format.ts";
import { type GgufTensorInfo, readGgufHeader } from "./reader.ts";

/** Options for {@link modelFingerprint}. */
export interface ModelFingerprintOptions {
  /** Files up to this size are hashed whole. Default 256 MiB. */
  fullHashMaxBytes?: number;
  /** Evenly spaced samples of a larger file's tensor data. Default 256. */
  sampleCount?: number;
  /** Bytes per sample. Default 64 KiB. */
  sampleBytes?: number;
  /** Aborts hashing. */
  signal?: AbortSignal;
}

const FINGERPRINT_DOMAIN = "atlas-gguf-fingerprint/1";

/**
 * A stable id of a model file: 64 hex digits of SHA-256.
 *
 * Files up to `fullHashMaxBytes` (default 256 MiB, which covers every generated model) are
 * hashed whole, so any change of a weight changes the id. Larger files hash their size, every
 * byte before the tensor data (header, metadata, tensor infos), the first and last 4 KiB of every
 * tensor and `sampleCount` evenly spaced `sampleBytes` chunks of the data: about 16 MiB plus 8 KiB
 * per tensor, read in a fraction of a second even for multi-GB models. Two real models (other
 * weights, another quantization) differ in nearly every chunk; only a deliberate edit of an
 * unsampled byte of a large file goes unnoticed. The two modes are domain-separated, so they
 * never give the same id.
 *
 * @throws {GgufError} `io` if the file cannot be read; a large file that is not valid GGUF is
 * sampled as raw bytes rather than rejected.
 */
export async function modelFingerprint(path: string, options: ModelFingerprintOptions = {}): Promise<string> {
  const fullMax = options.fullHashMaxBytes ?? 256 * 1024 * 1024;
  const sampleCount = options.sampleCount ?? 256;
  const sampleBytes = options.sampleBytes ?? 64 * 1024;
  const { signal } = options;
  let fh: FileHandle | undefined;
  try {
    const size = (await stat(path)).size;
    const hash = createHash("sha256");
    const sizeBytes = Buffer.alloc(8);
    sizeBytes.writeBigUInt64LE(BigInt(size));
    fh = await open(path, "r");
    const buf = Buffer.alloc(4 * 1024 * 1024);
    const hashRange = async (start: number, end: number) => {
      let pos = start;
      while (pos < end) {
        signal?.throwIfAborted();
        const { bytesRead } = await fh!.read(buf, 0, Math.min(buf.length, end - pos), pos);
        if (bytesRead === 0) break;
        hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    };
    if (size <= fullMax) {
      hash.update(`${FINGERPRINT_DOMAIN}\nfull\n`);
      hash.update(sizeBytes);
      await hashRange(0, size);
      return hash.digest("hex");
    }
    hash.update(`${FINGERPRINT_DOMAIN}\nsampled\n`);
    hash.update(sizeBytes);
    let dataOffset = Math.min(size, 16 * 1024 * 1024);
    let tensors: readonly GgufTensorInfo[] = [];
    try {
      const header = await readGgufHeader(path, { ...(signal === undefined ? {} : { signal }) });
      dataOffset = Math.min(size, header.dataOffset);
      tensors = header.tensors;
    } catch (err) {
      if (err instanceof GgufError && err.code === GgufErrorCode.aborted) throw err;
    }
    await hashRange(0, dataOffset);
    const edge = 4096;
    for (const t of tensors) {
      const start = dataOffset + t.offset;
      const end = Math.min(size, start + (t.byteSize ?? 0));
      await hashRange(start, Math.min(end, start + edge));
      await hashRange(Math.max(start, end - edge), end);
    }
    const span = size - dataOffset;
    for (let i = 0; i < sampleCount && span > 0; i++) {
      const start = dataOffset + Math.floor((span * i) / sampleCount);
      await hashRange(start, Math.min(size, start + sampleBytes));
    }
    await hashRange(Math.max(dataOffset, size - sampleBytes), size);
    return hash.digest("hex");
  } catch (err) {
    throw fileError(path, err);
  } finally {
    await fh?.close().catch(() => {});
  }
}
