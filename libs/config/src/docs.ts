/**
 * Prints the variables table of `docs/configuration.md` from the schema:
 * `node --import tsx libs/config/src/docs.ts`. A test keeps the document and the schema in step.
 *
 * @module
 */
import { z } from "zod";
import { configSchema } from "./schema.ts";

/** One markdown table row per variable: name, default, description. */
export function configTable(): string {
  const rows = ["| variable | default | meaning |", "|---|---|---|"];
  for (const [key, schema] of Object.entries(configSchema.shape)) {
    const s = schema as z.ZodType;
    let def = "(unset)";
    if (s instanceof z.ZodDefault) {
      const v = (s as z.ZodDefault<z.ZodType>).def.defaultValue;
      def = `\`${typeof v === "boolean" ? (v ? "1" : "0") : String(v)}\``;
    } else if (s instanceof z.ZodPrefault) {
      // A default given as the text to parse (the variable's own spelling, e.g. ATLAS_GPU's `false`).
      def = `\`${String((s as z.ZodPrefault<z.ZodType>).def.defaultValue)}\``;
    }
    rows.push(`| \`${key}\` | ${def} | ${s.description ?? ""} |`);
  }
  return rows.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(configTable());
