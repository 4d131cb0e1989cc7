/**
 * GGUF format constants shared by the writer and the reader: value types and the shape of a
 * metadata value, ggml tensor types with their block sizes, and the error type.
 *
 * Reference: `ggml/include/gguf.h` and `ggml/src/ggml.c` (type traits) in llama.cpp.
 *
 * @module
 */

/** The four bytes every GGUF file starts with ("GGUF"). */
export const GGUF_MAGIC = "GGUF";

/** The GGUF version this library writes. The reader accepts versions 2 and 3. */
export const GGUF_VERSION = 3;

/** The tensor data alignment used when a file has no `general.alignment` key. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Types of metadata values, as stored in the file (`gguf_type`). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** A metadata value type code. */
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

/** A metadata value: numbers (64-bit integers beyond 2^53 as `bigint`), strings, booleans, arrays. */
export type GgufValue = number | bigint | string | boolean | GgufValue[];

/** ggml tensor types (`ggml_type`) that a GGUF file may name. Gaps are types llama.cpp removed. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;

/** A ggml tensor type code. */
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

/**
 * Elements per block and bytes per block of each ggml type, checked against
 * `getBlockSizeForGgmlType` / `getTypeSizeForGgmlType` of the llama.cpp that node-llama-cpp
 * 3.21.1 bundles.
 */
export const GGML_TYPE_TRAITS: ReadonlyMap<number, { readonly name: string; readonly blockSize: number; readonly typeSize: number }> =
  new Map(
    (
      [
        [GgmlType.F32, 1, 4],
        [GgmlType.F16, 1, 2],
        [GgmlType.Q4_0, 32, 18],
        [GgmlType.Q4_1, 32, 20],
        [GgmlType.Q5_0, 32, 22],
        [GgmlType.Q5_1, 32, 24],
        [GgmlType.Q8_0, 32, 34],
        [GgmlType.Q8_1, 32, 36],
        [GgmlType.Q2_K, 256, 84],
        [GgmlType.Q3_K, 256, 110],
        [GgmlType.Q4_K, 256, 144],
        [GgmlType.Q5_K, 256, 176],
        [GgmlType.Q6_K, 256, 210],
        [GgmlType.Q8_K, 256, 292],
        [GgmlType.IQ2_XXS, 256, 66],
        [GgmlType.IQ2_XS, 256, 74],
        [GgmlType.IQ3_XXS, 256, 98],
        [GgmlType.IQ1_S, 256, 50],
        [GgmlType.IQ4_NL, 32, 18],
        [GgmlType.IQ3_S, 256, 110],
        [GgmlType.IQ2_S, 256, 82],
        [GgmlType.IQ4_XS, 256, 136],
        [GgmlType.I8, 1, 1],
        [GgmlType.I16, 1, 2],
        [GgmlType.I32, 1, 4],
        [GgmlType.I64, 1, 8],
        [GgmlType.F64, 1, 8],
        [GgmlType.IQ1_M, 256, 56],
        [GgmlType.BF16, 1, 2],
        [GgmlType.TQ1_0, 256, 54],
        [GgmlType.TQ2_0, 256, 66],
        [GgmlType.MXFP4, 32, 17],
        [GgmlType.NVFP4, 64, 36],
        [GgmlType.Q1_0, 128, 18],
        [GgmlType.Q2_0, 64, 18],
      ] as const
    ).map(([type, blockSize, typeSize]) => [
      type,
      { name: Object.keys(GgmlType).find((k) => GgmlType[k as keyof typeof GgmlType] === type) ?? String(type), blockSize, typeSize },
    ]),
  );

/** The most dimensions a ggml tensor has (`GGML_MAX_DIMS`). */
export const GGML_MAX_DIMS = 4;

/** llama.cpp token types (`llama_token_type`), stored in `tokenizer.ggml.token_type`. */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** A token type code. */
export type TokenType = (typeof TokenType)[keyof typeof TokenType];

/** Why a GGUF operation failed. */
export const GgufErrorCode = {
  /** The file could not be opened, read or written. */
  io: "io",
  /** The file is empty or ends before the structure it declares. */
  truncated: "truncated",
  /** The file does not start with "GGUF". */
  badMagic: "bad_magic",
  /** The GGUF version is not 2 or 3 (or the file is big-endian). */
  unsupportedVersion: "unsupported_version",
  /** A structure in the file is malformed (unknown type, absurd length, ...). */
  malformed: "malformed",
  /** Options given to the writer are inconsistent. */
  invalidOptions: "invalid_options",
  /** The operation was aborted through its signal. */
  aborted: "aborted",
} as const;

/** A {@link GgufError} code. */
export type GgufErrorCode = (typeof GgufErrorCode)[keyof typeof GgufErrorCode];

/** Options for {@link GgufError}. */
export interface GgufErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** The file concerned, if any. */
  path?: string;
}

/** The error every function of `@atlas/gguf` throws. */
export class GgufError extends Error {
  override readonly name = "GgufError";
  /** What went wrong, as a stable code. */
  readonly code: GgufErrorCode;
  /** The file concerned, if any. */
  readonly path: string | undefined;

  constructor(code: GgufErrorCode, message: string, options: GgufErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path;
  }
}

/** Rounds `n` up to a multiple of `alignment`. */
export function alignUp(n: number, alignment: number): number {
  const rem = n % alignment;
  return rem === 0 ? n : n + alignment - rem;
}
