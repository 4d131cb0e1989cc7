/**
 * `rewriteGgufMetadata`: copies a GGUF file with edited metadata, keeping the tensors. Handy to
 * make broken fixtures (a missing key, a wrong value) from a generated model.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { open, rename, unlink } from "node:fs/promises";
import { ByteWriter, writeKeyValue } from "./encode.ts";
import { GgufError, GgufErrorCode, type GgufValue, type GgufValueType } from "./format.ts";
import { readGgufHeader } from "./reader.ts";

/** One metadata key-value pair with its stored type. */
export interface GgufMetadataEntry {
  readonly key: string;
  readonly type: GgufValueType;
  /** Element type, for arrays. */
  readonly itemType?: GgufValueType;
  readonly value: GgufValue;
}

/** Options for {@link rewriteGgufMetadata}. */
export interface RewriteGgufMetadataOptions {
  /** Aborts copying; the partial destination is removed. */
  signal?: AbortSignal;
}

/**
 * Copies `source` to `destination` (atomically, through a temporary file), replacing the
 * metadata by `edit(entries)`. Tensor infos and data are copied unchanged; the data keeps the
 * source's alignment. Entries come in file order.
 *
 * @throws {GgufError} if the source cannot be read or the destination written.
 */
export async function rewriteGgufMetadata(
  source: string,
  destination: string,
  edit: (entries: GgufMetadataEntry[]) => GgufMetadataEntry[],
  options: RewriteGgufMetadataOptions = {},
): Promise<void> {
  const header = await readGgufHeader(source, options);
  const entries: GgufMetadataEntry[] = Object.entries(header.metadata).map(([key, value]) => {
    const t = header.metadataTypes[key]!;
    return t.itemType === undefined ? { key, type: t.type, value } : { key, type: t.type, itemType: t.itemType, value };
  });
  const edited = edit(entries);

  const w = new ByteWriter();
  w.bytes(Buffer.from("GGUF", "latin1"));
  w.u32(header.version);
  w.u64(header.tensors.length);
  w.u64(edited.length);
  for (const e of edited) writeKeyValue(w, e.key, e);
  for (const t of header.tensors) {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(t.offset);
  }
  w.pad(header.alignment);

  const tmp = `${destination}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  let src: FileHandle | undefined;
  let dst: FileHandle | undefined;
  try {
    src = await open(source, "r");
    dst = await open(tmp, "wx");
    await dst.write(w.toUint8Array(), 0, w.length, 0);
    const buf = Buffer.alloc(1 << 20);
    let from = header.dataOffset;
    let to = w.length;
    for (;;) {
      options.signal?.throwIfAborted();
      const { bytesRead } = await src.read(buf, 0, buf.length, from);
      if (bytesRead === 0) break;
      await dst.write(buf, 0, bytesRead, to);
      from += bytesRead;
      to += bytesRead;
    }
    await dst.close();
    dst = undefined;
    await rename(tmp, destination);
  } catch (err) {
    await dst?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    if (err instanceof GgufError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    throw new GgufError(GgufErrorCode.io, `Cannot rewrite "${source}" to "${destination}": ${message}`, { cause: err, path: destination });
  } finally {
    await src?.close().catch(() => {});
  }
}
