/**
 * `@atlas/sealed`: data at rest, compressed and encrypted. An envelope format (`envelope.ts`:
 * magic, version, codec, key id, nonce, AES-256-GCM with the header as additional data), the
 * codecs of `node:zlib` (`codec.ts`), master keys from the configuration (`master.ts`), per-scope
 * data keys wrapped by the master key in a KV bucket, and their rotation (`keyring.ts`), and the
 * read/write policy the services use (`sealer.ts`), and transit sealing to a public key for data
 * one service parks for another (`transit.ts`). See docs/adr/0018-memory-at-rest.md.
 *
 * @module
 */
export {
  CODEC_IDS,
  type Codec,
  CompressionSetting,
  compress,
  compressAsync,
  DEFAULT_MIN_COMPRESS_BYTES,
  decompress,
  decompressAsync,
  hasZstd,
  MAX_USEFUL_RATIO,
  PROBE_FROM_BYTES,
  resolveCodec,
  worthCompressing,
} from "./codec.ts";
export {
  type DataKey,
  ENVELOPE_VERSION,
  type EnvelopeHeader,
  isSealed,
  LARGE_ENVELOPE_BYTES,
  MAGIC,
  open,
  openLarge,
  readHeader,
  SealedError,
  type SealedErrorCode,
  type SealOptions,
  seal,
  sealLarge,
} from "./envelope.ts";
export { KeyCheck, Keyring, type KeyStore, rotateMasterKey, tenantScope, WrappedKey } from "./keyring.ts";
export { keyCheckValue, loadMasterKeys, type MasterKey, type MasterKeySources, type MasterKeys, parseMasterKey } from "./master.ts";
export { openSealer, Sealer, type SealerConfig, type SealerOptions, type SealerStats, unkeyedSealer } from "./sealer.ts";
export {
  isTransitKeyId,
  openTransit,
  sealTo,
  TransitKeyEntry,
  type TransitRecipient,
  transitDataKey,
  transitKeyEntry,
  transitKeyOf,
  transitKeyPair,
  transitRecipient,
  transitRecipientId,
  transitRecipientOf,
} from "./transit.ts";
