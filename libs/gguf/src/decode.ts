/**
 * Decoding GGUF values straight from a file: a cursor that reads front to back in 1 MiB reads
 * (growing its buffer only for a single long value), scalars, strings and arrays, and the
 * conversion of read failures into `GgufError`s. `reader.ts` builds the header from these.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";
import { GgufError, GgufErrorCode, type GgufValue, GgufValueType } from "./format.ts";

const READ_CHUNK = 1 << 20;

/** Reads a file front to back through a buffer that grows only for long single values. */
export class Cursor {
  readonly #fh: FileHandle;
  readonly #path: string;
  readonly #signal: AbortSignal | undefined;
  readonly fileSize: number;
  #buf: Buffer = Buffer.alloc(READ_CHUNK);
  #bufStart = 0;
  #bufLen = 0;
  /** Absolute position of the next byte to parse. */
  pos = 0;
  /** What is being parsed, for error messages. */
  context = "the header";

  constructor(fh: FileHandle, path: string, fileSize: number, signal: AbortSignal | undefined) {
    this.#fh = fh;
    this.#path = path;
    this.fileSize = fileSize;
    this.#signal = signal;
  }

  /** Bytes left in the file after `pos`. */
  get remaining(): number {
    return this.fileSize - this.pos;
  }

  /** Makes `n` bytes from `pos` available in the buffer; returns their offset in it. */
  async need(n: number): Promise<number> {
    const rel = this.pos - this.#bufStart;
    if (rel >= 0 && rel + n <= this.#bufLen) return rel;
    if (this.pos + n > this.fileSize) {
      throw new GgufError(
        GgufErrorCode.truncated,
        `File "${this.#path}" is truncated: it ends at byte ${this.fileSize} inside ${this.context}`,
        { path: this.#path },
      );
    }
    this.#signal?.throwIfAborted();
    const want = Math.min(Math.max(n, READ_CHUNK), this.fileSize - this.pos);
    if (want > this.#buf.length) this.#buf = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.#fh.read(this.#buf, got, want - got, this.pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.#bufStart = this.pos;
    this.#bufLen = got;
    if (got < n) {
      throw new GgufError(GgufErrorCode.truncated, `File "${this.#path}" shrank while being read`, { path: this.#path });
    }
    return 0;
  }

  async u8(): Promise<number> {
    const o = await this.need(1);
    this.pos += 1;
    return this.#buf.readUInt8(o);
  }

  async u32(): Promise<number> {
    const o = await this.need(4);
    this.pos += 4;
    return this.#buf.readUInt32LE(o);
  }

  async u64(): Promise<number | bigint> {
    const o = await this.need(8);
    this.pos += 8;
    const v = this.#buf.readBigUInt64LE(o);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /**
   * A u64 that must be a safe integer no larger than `max`. Values beyond the file size are
   * malformed; smaller ones that exceed `max` (what is left of the file) mean truncation.
   */
  async size(what: string, max: number): Promise<number> {
    const v = await this.u64();
    if (typeof v === "bigint" || v > Math.max(max, this.fileSize)) {
      throw new GgufError(GgufErrorCode.malformed, `File "${this.#path}" is malformed: ${what} ${String(v)} is too large`, {
        path: this.#path,
      });
    }
    if (v > max) {
      throw new GgufError(
        GgufErrorCode.truncated,
        `File "${this.#path}" is truncated: it ends at byte ${this.fileSize} inside ${this.context}`,
        { path: this.#path },
      );
    }
    return v;
  }

  async scalar(type: GgufValueType): Promise<GgufValue> {
    const b = this.#buf;
    switch (type) {
      case GgufValueType.UINT8:
        return b.readUInt8(await this.advance(1));
      case GgufValueType.INT8:
        return b.readInt8(await this.advance(1));
      case GgufValueType.UINT16:
        return b.readUInt16LE(await this.advance(2));
      case GgufValueType.INT16:
        return b.readInt16LE(await this.advance(2));
      case GgufValueType.UINT32:
        return b.readUInt32LE(await this.advance(4));
      case GgufValueType.INT32:
        return b.readInt32LE(await this.advance(4));
      case GgufValueType.FLOAT32:
        return b.readFloatLE(await this.advance(4));
      case GgufValueType.FLOAT64:
        return b.readDoubleLE(await this.advance(8));
      case GgufValueType.BOOL:
        return b.readUInt8(await this.advance(1)) !== 0;
      case GgufValueType.UINT64: {
        const v = this.#buf.readBigUInt64LE(await this.advance(8));
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufValueType.INT64: {
        const v = this.#buf.readBigInt64LE(await this.advance(8));
        return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufValueType.STRING:
        return this.string();
      default:
        throw new GgufError(GgufErrorCode.malformed, `File "${this.#path}" is malformed: unknown value type ${type} in ${this.context}`, {
          path: this.#path,
        });
    }
  }

  /**
   * Reads a scalar if it is already buffered, without awaiting; `undefined` otherwise. Keeps
   * token arrays of hundreds of thousands of strings fast.
   */
  trySync(type: GgufValueType): GgufValue | undefined {
    const rel = this.pos - this.#bufStart;
    const avail = this.#bufLen - rel;
    const b = this.#buf;
    if (type === GgufValueType.STRING) {
      if (avail < 8) return undefined;
      const len = b.readBigUInt64LE(rel);
      if (len > BigInt(avail - 8)) return undefined;
      const n = Number(len);
      this.pos += 8 + n;
      return b.toString("utf8", rel + 8, rel + 8 + n);
    }
    const size = SCALAR_BYTES[type];
    if (size === undefined || avail < size || type === GgufValueType.ARRAY) return undefined;
    this.pos += size;
    switch (type) {
      case GgufValueType.UINT8:
        return b.readUInt8(rel);
      case GgufValueType.INT8:
        return b.readInt8(rel);
      case GgufValueType.UINT16:
        return b.readUInt16LE(rel);
      case GgufValueType.INT16:
        return b.readInt16LE(rel);
      case GgufValueType.UINT32:
        return b.readUInt32LE(rel);
      case GgufValueType.INT32:
        return b.readInt32LE(rel);
      case GgufValueType.FLOAT32:
        return b.readFloatLE(rel);
      case GgufValueType.FLOAT64:
        return b.readDoubleLE(rel);
      case GgufValueType.BOOL:
        return b.readUInt8(rel) !== 0;
      default:
        this.pos -= size; // 64-bit integers: take the general path
        return undefined;
    }
  }

  /** Makes `n` bytes available, consumes them and returns their buffer offset. */
  async advance(n: number): Promise<number> {
    const o = await this.need(n);
    this.pos += n;
    return o;
  }

  async string(): Promise<string> {
    const len = await this.size("a string length", this.remaining - 8);
    const o = await this.need(len);
    this.pos += len;
    return this.#buf.toString("utf8", o, o + len);
  }
}

/** Stored bytes of each value type; for a string those of its length, for an array those of its item type and length. */
export const SCALAR_BYTES: Readonly<Record<number, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.STRING]: 8,
  [GgufValueType.ARRAY]: 12,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

/** Reads an array whose item type has been read: its length, then its items (arrays of arrays only one level deep). */
export async function readArray(c: Cursor, itemType: GgufValueType, path: string, depth: number): Promise<GgufValue[]> {
  const itemBytes = SCALAR_BYTES[itemType];
  if (itemBytes === undefined || (itemType === GgufValueType.ARRAY && depth > 0)) {
    throw new GgufError(GgufErrorCode.malformed, `File "${path}" is malformed: unsupported array item type ${itemType} in ${c.context}`, {
      path,
    });
  }
  const count = await c.size("an array length", Math.floor(c.remaining / itemBytes));
  const out: GgufValue[] = new Array(count);
  for (let i = 0; i < count; i++) {
    if (itemType === GgufValueType.ARRAY) out[i] = await readArray(c, (await c.u32()) as GgufValueType, path, depth + 1);
    else out[i] = c.trySync(itemType) ?? (await c.scalar(itemType));
  }
  return out;
}

/** A failure while reading `path` as a `GgufError` (`aborted`, `io`, or the `GgufError` itself). */
export function fileError(path: string, err: unknown): GgufError {
  if (err instanceof GgufError) return err;
  if (err instanceof Error && err.name === "AbortError") {
    return new GgufError(GgufErrorCode.aborted, `Reading "${path}" was aborted`, { cause: err, path });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new GgufError(GgufErrorCode.io, `Cannot read "${path}": ${message}`, { cause: err, path });
}
