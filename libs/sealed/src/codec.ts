/**
 * Compression codecs of the envelope, all from `node:zlib`: zstd where this Node has it (Node ≥
 * 22.15), else brotli or gzip. The codec is picked at run time and recorded in every envelope's
 * header, so data written by one Node is read by any other that has the codec (brotli and gzip
 * are in every supported Node; zstd data needs a Node with zstd, and says so when it is missing).
 *
 * @module
 */
import { promisify } from "node:util";
import * as zlib from "node:zlib";
import { z } from "zod";

/** Codec ids as stored in the header (one byte). */
export const CODEC_IDS = { none: 0, gzip: 1, brotli: 2, zstd: 3 } as const;
/** A codec. */
export type Codec = keyof typeof CODEC_IDS;

/** `ATLAS_MEMORY_COMPRESSION`: a codec, or `auto` (the best this Node offers). */
export const CompressionSetting = z.enum(["auto", "zstd", "brotli", "gzip", "none"]);
/** `ATLAS_MEMORY_COMPRESSION`. */
export type CompressionSetting = z.infer<typeof CompressionSetting>;

/** Payloads smaller than this are stored with codec `none` (the request path's appends are small). */
export const DEFAULT_MIN_COMPRESS_BYTES = 1024;

/** Payloads at least this large are probed before they are compressed ({@link worthCompressing}). */
export const PROBE_FROM_BYTES = 256 * 1024;
/** Probed payloads that do not shrink below this ratio are stored with codec `none`. */
export const MAX_USEFUL_RATIO = 0.85;

type ZstdSync = (buf: Uint8Array, options?: { params?: Record<number, number> }) => Buffer;
type ZstdAsync = (buf: Uint8Array, options: { params?: Record<number, number> }, cb: (err: Error | null, out: Buffer) => void) => void;
const zstd = zlib as unknown as {
  zstdCompressSync?: ZstdSync;
  zstdDecompressSync?: ZstdSync;
  zstdCompress?: ZstdAsync;
  zstdDecompress?: ZstdAsync;
  constants: Record<string, number>;
};

/** Whether this Node has zstd in `node:zlib`. */
export function hasZstd(): boolean {
  return typeof zstd.zstdCompressSync === "function" && typeof zstd.zstdDecompressSync === "function";
}

/** The codec a setting means on this Node (`auto`: zstd, else brotli); an unavailable zstd is an error. */
export function resolveCodec(setting: CompressionSetting): Codec {
  if (setting === "auto") return hasZstd() ? "zstd" : "brotli";
  if (setting === "zstd" && !hasZstd()) {
    throw new Error(`ATLAS_MEMORY_COMPRESSION=zstd needs Node >= 22.15 (this is ${process.version}); use auto, brotli or gzip`);
  }
  return setting;
}

/** The codec of a stored id. */
export function codecOf(id: number): Codec {
  const found = (Object.entries(CODEC_IDS) as [Codec, number][]).find(([, v]) => v === id);
  if (found === undefined) throw new Error(`unknown compression codec id ${id}`);
  return found[0];
}

/**
 * Compresses with `codec`. Brotli runs at quality 4 and zstd at level 3: speed first (appends
 * are on the request path), a ratio close to the slow levels on JSON and KV state.
 */
export function compress(codec: Codec, data: Uint8Array): Uint8Array {
  switch (codec) {
    case "none":
      return data;
    case "gzip":
      return zlib.gzipSync(data, optionsOf(codec, data.length));
    case "brotli":
      return zlib.brotliCompressSync(data, optionsOf(codec, data.length));
    case "zstd": {
      if (zstd.zstdCompressSync === undefined) throw new Error(`zstd is not available in Node ${process.version}`);
      return zstd.zstdCompressSync(data, optionsOf(codec, data.length) as { params?: Record<number, number> });
    }
  }
}

/** The options {@link compress} gives each codec. */
function optionsOf(codec: "gzip" | "brotli" | "zstd", length: number): zlib.ZlibOptions & zlib.BrotliOptions {
  if (codec === "gzip") return { level: 6 };
  if (codec === "brotli") {
    return { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: length } };
  }
  const level = zstd.constants.ZSTD_c_compressionLevel;
  return level === undefined ? {} : { params: { [level]: 3 } };
}

const gzipAsync = promisify(zlib.gzip);
const gunzipAsync = promisify(zlib.gunzip);
const brotliAsync = promisify(zlib.brotliCompress);
const unbrotliAsync = promisify(zlib.brotliDecompress);

function zstdAsync(fn: ZstdAsync | undefined, data: Uint8Array, options: { params?: Record<number, number> }): Promise<Buffer> {
  if (fn === undefined) return Promise.reject(new Error(`zstd is not available in Node ${process.version} (needs Node >= 22.15)`));
  return new Promise((resolve, reject) => fn(data, options, (err, out) => (err === null ? resolve(out) : reject(err))));
}

/** {@link compress} on libuv's thread pool: the event loop keeps turning (large payloads). */
export async function compressAsync(codec: Codec, data: Uint8Array): Promise<Uint8Array> {
  if (codec === "none") return data;
  const options = optionsOf(codec, data.length);
  if (codec === "gzip") return gzipAsync(data, options);
  if (codec === "brotli") return brotliAsync(data, options);
  return zstdAsync(zstd.zstdCompress, data, options as { params?: Record<number, number> });
}

/** {@link decompress} on libuv's thread pool. */
export async function decompressAsync(codec: Codec, data: Uint8Array): Promise<Uint8Array> {
  if (codec === "none") return data;
  if (codec === "gzip") return gunzipAsync(data);
  if (codec === "brotli") return unbrotliAsync(data);
  return zstdAsync(zstd.zstdDecompress, data, {});
}

/** Decompresses what {@link compress} made with `codec`. */
export function decompress(codec: Codec, data: Uint8Array): Uint8Array {
  switch (codec) {
    case "none":
      return data;
    case "gzip":
      return zlib.gunzipSync(data);
    case "brotli":
      return zlib.brotliDecompressSync(data);
    case "zstd":
      if (zstd.zstdDecompressSync === undefined) {
        throw new Error(`this data is zstd-compressed and Node ${process.version} has no zstd (needs Node >= 22.15)`);
      }
      return zstd.zstdDecompressSync(data);
  }
}

/**
 * Whether compressing `data` with `codec` pays: payloads under {@link PROBE_FROM_BYTES} always
 * (cheap either way); larger ones only when three 16 KiB samples (at ¼, ½, ¾) shrink below
 * {@link MAX_USEFUL_RATIO}. KV state of a model with high-entropy weights barely compresses
 * (≈ 0.88 with brotli for the `bench` model, docs/memory.md) and would cost ≈ 11 ms of CPU per MB
 * for it; the probe costs about 1 % of that.
 */
export function worthCompressing(codec: Codec, data: Uint8Array): boolean {
  if (codec === "none") return false;
  if (data.length < PROBE_FROM_BYTES) return true;
  const size = 16 * 1024;
  let packed = 0;
  for (const at of [0.25, 0.5, 0.75]) {
    const start = Math.floor(data.length * at);
    packed += compress(codec, data.subarray(start, start + size)).length;
  }
  return packed / (3 * size) < MAX_USEFUL_RATIO;
}
