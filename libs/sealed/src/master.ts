/**
 * Master keys: the key that wraps every data key (`ATLAS_MEMORY_KEY`, or the first key of
 * `ATLAS_MEMORY_KEY_FILE`), and older ones still accepted for unwrapping until a rotation has
 * re-wrapped everything (`ATLAS_MEMORY_KEY_PREVIOUS`, or the file's further lines). Each is 32
 * random bytes in base64 (`openssl rand -base64 32`). A key is named by its key check value
 * (KCV): the first 8 bytes of HMAC-SHA256(key, "atlas memory key check"), in hex. The KCV is
 * stored with the wrapped keys, so a wrong key is recognised at start without trying to decrypt.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { SealedError } from "./envelope.ts";

/** One master key. */
export interface MasterKey {
  key: Uint8Array;
  /** Key check value: names the key without revealing it. */
  kcv: string;
}

/** The configured master keys: the current one (wraps), and older ones (only unwrap). */
export interface MasterKeys {
  current: MasterKey;
  previous: MasterKey[];
}

/** Where master keys come from (the config's variables). */
export interface MasterKeySources {
  ATLAS_MEMORY_KEY?: string | undefined;
  ATLAS_MEMORY_KEY_FILE?: string | undefined;
  ATLAS_MEMORY_KEY_PREVIOUS?: string | undefined;
}

/** The key check value of a key. */
export function keyCheckValue(key: Uint8Array): string {
  return createHmac("sha256", key).update("atlas memory key check").digest("hex").slice(0, 16);
}

/** A master key from its base64 text; `what` names the source in the error. */
export function parseMasterKey(text: string, what: string): MasterKey {
  const trimmed = text.trim();
  const key = Buffer.from(trimmed, "base64");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.length !== 32) {
    throw new SealedError(
      "format",
      `${what} must be 32 bytes in base64 (44 characters; e.g. \`openssl rand -base64 32\`), got ${key.length} bytes`,
    );
  }
  return { key, kcv: keyCheckValue(key) };
}

/**
 * The master keys the configuration names, or undefined when none is configured (memory is
 * then only compressed). `ATLAS_MEMORY_KEY` and `ATLAS_MEMORY_KEY_FILE` together are an error.
 * The file holds one base64 key per line, the current one first; empty lines and `#` comments
 * are skipped.
 */
export function loadMasterKeys(
  src: MasterKeySources,
  readFile: (path: string) => string = (p) => readFileSync(p, "utf8"),
): MasterKeys | undefined {
  const env = src.ATLAS_MEMORY_KEY?.trim();
  const file = src.ATLAS_MEMORY_KEY_FILE?.trim();
  if (env && file) throw new SealedError("format", "set ATLAS_MEMORY_KEY or ATLAS_MEMORY_KEY_FILE, not both");
  const keys: MasterKey[] = [];
  if (env) keys.push(parseMasterKey(env, "ATLAS_MEMORY_KEY"));
  else if (file) {
    let text: string;
    try {
      text = readFile(file);
    } catch (err) {
      throw new SealedError("no_key", `cannot read ATLAS_MEMORY_KEY_FILE ${file}: ${(err as Error).message}`);
    }
    const lines = text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    if (lines.length === 0) throw new SealedError("no_key", `ATLAS_MEMORY_KEY_FILE ${file} holds no key`);
    keys.push(...lines.map((l, i) => parseMasterKey(l, `line ${i + 1} of ATLAS_MEMORY_KEY_FILE`)));
  }
  const previous = (src.ATLAS_MEMORY_KEY_PREVIOUS ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s, i) => parseMasterKey(s, `key ${i + 1} of ATLAS_MEMORY_KEY_PREVIOUS`));
  const [current, ...older] = keys;
  if (current === undefined) {
    if (previous.length > 0)
      throw new SealedError("no_key", "ATLAS_MEMORY_KEY_PREVIOUS is set without ATLAS_MEMORY_KEY or ATLAS_MEMORY_KEY_FILE");
    return undefined;
  }
  const all = [...older, ...previous].filter((k, i, a) => k.kcv !== current.kcv && a.findIndex((x) => x.kcv === k.kcv) === i);
  return { current, previous: all };
}
