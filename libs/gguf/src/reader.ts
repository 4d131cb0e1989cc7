/**
 * Reading GGUF headers: the header, metadata and tensor infos of a file (never the tensor
 * data), and the size of a tensor's data. Values are decoded by `decode.ts`; `validate.ts`
 * checks what this returns, `fingerprint.ts` hashes the file.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";
import { Cursor, fileError, readArray, SCALAR_BYTES } from "./decode.ts";
import {
  alignUp,
  GGML_MAX_DIMS,
  GGML_TYPE_TRAITS,
  GGUF_DEFAULT_ALIGNMENT,
  GgufError,
  GgufErrorCode,
  type GgufValue,
  GgufValueType,
} from "./format.ts";

/** The stored type of a metadata value. */
export interface GgufValueTypeInfo {
  readonly type: GgufValueType;
  /** Element type, for arrays. */
  readonly itemType?: GgufValueType;
}

/** One tensor as described in the header. */
export interface GgufTensorInfo {
  readonly name: string;
  /** Shape in ggml order: `dims[0]` is the row length (the fastest-varying dimension). */
  readonly dims: readonly number[];
  /** ggml type code (see `GgmlType`). */
  readonly type: number;
  /** ggml type name, or `"unknown(<code>)"`. */
  readonly typeName: string;
  /** Offset of the data relative to {@link GgufHeader.dataOffset}. */
  readonly offset: number;
  /** Number of elements. */
  readonly elementCount: number;
  /** Bytes of data, or `null` when the type is unknown or the row length is not a multiple of its block. */
  readonly byteSize: number | null;
}

/** Everything in a GGUF file before the tensor data. */
export interface GgufHeader {
  readonly path: string;
  readonly fileSize: number;
  /** GGUF version (2 or 3). */
  readonly version: number;
  /** Tensor data alignment (`general.alignment`, default 32). */
  readonly alignment: number;
  /** Metadata values by key (a null-prototype object). */
  readonly metadata: Readonly<Record<string, GgufValue>>;
  /** Stored types of the metadata values, by key. */
  readonly metadataTypes: Readonly<Record<string, GgufValueTypeInfo>>;
  readonly tensors: readonly GgufTensorInfo[];
  /** Byte offset where the tensor infos start (the end of the metadata). */
  readonly tensorInfoOffset: number;
  /** Byte offset where the tensor data starts. */
  readonly dataOffset: number;
}

/** Options for {@link readGgufHeader}. */
export interface ReadGgufHeaderOptions {
  /** Aborts reading. */
  signal?: AbortSignal;
}

/** Bytes of a tensor of `type` and shape `dims`, or `null` if the type is unknown or rows do not fill blocks. */
export function tensorByteSize(type: number, dims: readonly number[]): number | null {
  const traits = GGML_TYPE_TRAITS.get(type);
  const ne0 = dims[0] ?? 1;
  if (traits === undefined || ne0 % traits.blockSize !== 0) return null;
  const rows = dims.slice(1).reduce((a, b) => a * b, 1);
  return (ne0 / traits.blockSize) * traits.typeSize * rows;
}

/**
 * Reads the header, metadata and tensor infos of a GGUF file (versions 2 and 3, little-endian),
 * incrementally in 1 MiB reads, never touching the tensor data.
 *
 * @throws {GgufError} `io` if the file cannot be read, `truncated` if it is empty or ends early,
 * `bad_magic`, `unsupported_version`, `malformed` for structural errors, `aborted`.
 */
export async function readGgufHeader(path: string, options: ReadGgufHeaderOptions = {}): Promise<GgufHeader> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, "r");
    const fileSize = (await fh.stat()).size;
    if (fileSize === 0) throw new GgufError(GgufErrorCode.truncated, `File "${path}" is empty`, { path });
    const c = new Cursor(fh, path, fileSize, options.signal);
    const head = Buffer.alloc(Math.min(4, fileSize));
    await fh.read(head, 0, head.length, 0);
    if (head.toString("latin1") !== "GGUF") {
      throw new GgufError(
        GgufErrorCode.badMagic,
        `File "${path}" is not a GGUF file: it starts with bytes "${head.toString("hex")}", not "GGUF"`,
        { path },
      );
    }
    c.pos = 4;
    const version = await c.u32();
    if (version !== 2 && version !== 3) {
      const hint = (version & 0xffff) === 0 ? " (a big-endian file?)" : "";
      throw new GgufError(
        GgufErrorCode.unsupportedVersion,
        `File "${path}" has GGUF version ${version}${hint}; only versions 2 and 3 are supported`,
        {
          path,
        },
      );
    }
    const tensorCount = await c.size("the tensor count", Math.floor(fileSize / 32));
    const kvCount = await c.size("the metadata count", Math.floor(fileSize / 13));

    const metadata: Record<string, GgufValue> = Object.create(null);
    const metadataTypes: Record<string, GgufValueTypeInfo> = Object.create(null);
    for (let i = 0; i < kvCount; i++) {
      c.context = `metadata entry ${i}`;
      const key = await c.string();
      c.context = `metadata "${key}"`;
      if (key in metadata)
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: duplicate metadata key "${key}"`, { path });
      const type = (await c.u32()) as GgufValueType;
      if (SCALAR_BYTES[type] === undefined) {
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: unknown value type ${type} for "${key}"`, { path });
      }
      if (type === GgufValueType.ARRAY) {
        const itemType = (await c.u32()) as GgufValueType;
        metadata[key] = await readArray(c, itemType, path, 0);
        metadataTypes[key] = { type, itemType };
      } else {
        metadata[key] = await c.scalar(type);
        metadataTypes[key] = { type };
      }
    }

    const tensorInfoOffset = c.pos;
    let alignment = GGUF_DEFAULT_ALIGNMENT;
    const alignValue = metadata["general.alignment"];
    if (alignValue !== undefined) {
      if (typeof alignValue !== "number" || alignValue <= 0 || (alignValue & (alignValue - 1)) !== 0) {
        throw new GgufError(
          GgufErrorCode.malformed,
          `File "${path}" is malformed: "general.alignment" is "${String(alignValue)}", not a power of two`,
          {
            path,
          },
        );
      }
      alignment = alignValue;
    }

    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < tensorCount; i++) {
      c.context = `tensor info ${i}`;
      const name = await c.string();
      c.context = `tensor info "${name}"`;
      const nDims = await c.u32();
      if (nDims < 1 || nDims > GGML_MAX_DIMS) {
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: tensor "${name}" has ${nDims} dimensions`, { path });
      }
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(await c.size(`dimension ${d} of tensor "${name}"`, Number.MAX_SAFE_INTEGER));
      const type = await c.u32();
      const offset = await c.size(`the offset of tensor "${name}"`, Number.MAX_SAFE_INTEGER);
      const elementCount = dims.reduce((a, b) => a * b, 1);
      if (!Number.isSafeInteger(elementCount)) {
        throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: tensor "${name}" has too many elements`, { path });
      }
      const traits = GGML_TYPE_TRAITS.get(type);
      tensors.push({
        name,
        dims,
        type,
        typeName: traits?.name ?? `unknown(${type})`,
        offset,
        elementCount,
        byteSize: tensorByteSize(type, dims),
      });
    }
    const dataOffset = alignUp(c.pos, alignment);
    return { path, fileSize, version, alignment, metadata, metadataTypes, tensors, tensorInfoOffset, dataOffset };
  } catch (err) {
    throw fileError(path, err);
  } finally {
    await fh?.close().catch(() => {});
  }
}
