/**
 * Prints the error table of `docs/api.md` from the registry (`error_codes.ts`):
 * `node --conditions=development --import tsx services/api/src/error_docs.ts`. A test keeps the
 * document and the registry in step.
 *
 * @module
 */
import { API_ERRORS } from "./error_codes.ts";

/** One markdown table row per code: status, OpenAI type, code, when it is sent. */
export function errorTable(): string {
  const rows = ["| status | type | code | when |", "|---|---|---|---|"];
  for (const [code, spec] of Object.entries(API_ERRORS)) {
    const status = spec.statuses ?? String(spec.status);
    rows.push(`| ${status} | \`${spec.type}\` | \`${code}\` | ${spec.when} |`);
  }
  return rows.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(errorTable());
