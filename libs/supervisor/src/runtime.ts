/**
 * How the supervisor runs its children. Two runtimes, chosen by how the supervisor itself runs:
 *
 * - `compiled` (`npm start`, which builds first): each service's JavaScript from `npm run build`,
 *   `node services/<name>/dist/main.js`, with no loader. Workspace packages resolve to their
 *   `dist/mod.js` (the `default` condition of their exports).
 * - `tsx` (`npm run dev`, and the tests): the TypeScript sources,
 *   `node --conditions=development --import tsx services/<name>/src/main.ts`. The `development`
 *   condition sends workspace packages to their `src/mod.ts`, so no build is needed and a stale
 *   `dist/` is never loaded.
 *
 * See docs/adr/0010-compiled-services.md.
 *
 * @module
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";

/** How services run: the compiled JavaScript under `dist/`, or the TypeScript sources under `src/` through tsx. */
export type Runtime = "compiled" | "tsx";

/** This process's runtime: `compiled` when this module is the JavaScript `npm run build` emitted. */
export const RUNTIME: Runtime = import.meta.url.endsWith(".ts") ? "tsx" : "compiled";

/** Node options that run TypeScript sources: tsx, and workspace packages resolved to their sources. */
export const TSX_NODE_ARGS: readonly string[] = ["--conditions=development", "--import", "tsx"];

/**
 * The file of module `module` (`main`, `permissions`…) of service `name`:
 * `services/<name>/dist/<module>.js` compiled, `services/<name>/src/<module>.ts` under tsx.
 */
export function serviceModule(rootDir: string, name: string, module: string, runtime: Runtime = RUNTIME): string {
  return runtime === "compiled"
    ? resolve(rootDir, "services", name, "dist", `${module}.js`)
    : resolve(rootDir, "services", name, "src", `${module}.ts`);
}

/**
 * V8 options per service. The services that allocate little per request (the scheduler relays
 * one small message, persistence and metrics handle one each) run with a small young generation:
 * semispaces of 1 MiB instead of growing to 16, about 5 MiB less resident each at idle, for a
 * scavenge every few hundred requests. The api, which allocates a request's JSON, prompt and
 * frames, gets 4 MiB: it grows its young generation to 16 MiB while it starts (route schemas, the
 * OpenAPI document) and keeps it; capped, it is about 9 MiB smaller at idle (84 vs 93 MiB
 * measured side by side; 2 MiB gave 81 but a larger GC share at c=32: 8.1% of the api's busy
 * time against 6.2% uncapped). The workers keep V8's default (a prompt, its tokens and the engine's
 * buffers per request). The supervisor, the images and the bench all use this.
 */
export const SERVICE_V8_ARGS: Readonly<Record<string, readonly string[]>> = {
  api: ["--max-semi-space-size=4"],
  scheduler: ["--max-semi-space-size=1"],
  persistence: ["--max-semi-space-size=1"],
  metrics: ["--max-semi-space-size=1"],
};

/** The V8 options of service `name` ({@link SERVICE_V8_ARGS}); none for others. */
export function serviceV8Args(name: string): string[] {
  return [...(SERVICE_V8_ARGS[name] ?? [])];
}

/** The Node options a script needs: {@link TSX_NODE_ARGS} for TypeScript (`.ts`, `.mts`), none for JavaScript. */
export function nodeArgsFor(script: string): string[] {
  return /\.m?ts$/.test(script) ? [...TSX_NODE_ARGS] : [];
}

/** Thrown when the compiled services are missing: `npm run build` has not run (or not to the end). */
export class BuildMissingError extends Error {
  constructor(readonly missing: readonly string[]) {
    super(
      `Compiled service code is missing (${missing.join(", ")}). Run \`npm run build\` first (\`npm start\` does), ` +
        "or `npm run dev` to run the TypeScript sources through tsx.",
    );
    this.name = "BuildMissingError";
  }
}

/** Throws {@link BuildMissingError} when one of `scripts` does not exist. */
export function assertScriptsExist(scripts: Iterable<string>): void {
  const missing = [...new Set(scripts)].filter((s) => !existsSync(s));
  if (missing.length > 0) throw new BuildMissingError(missing);
}
