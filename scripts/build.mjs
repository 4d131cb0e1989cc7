#!/usr/bin/env node
/**
 * `npm run build`: compiles every workspace package that has a `tsconfig.build.json` from its
 * `src/` to its `dist/` (`tsc -b tsconfig.build.json`, incremental: a no-op when nothing changed),
 * then copies the files of `src/` that are not TypeScript (the api's dashboard page, …) to the
 * same place under `dist/`, so code that finds them next to itself (`import.meta.url`) finds them
 * compiled too.
 *
 * `npm run clean` (`--clean`) deletes every `dist/`.
 *
 * Plain JavaScript so that it runs before anything is compiled. See docs/adr/0010-compiled-services.md.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

/** Workspace packages that are built: those with a tsconfig.build.json. */
const packages = ["libs", "services"].flatMap((group) =>
  readdirSync(join(root, group))
    .map((name) => join(root, group, name))
    .filter((dir) => existsSync(join(dir, "tsconfig.build.json"))),
);

if (process.argv.includes("--clean")) {
  for (const dir of packages) rmSync(join(dir, "dist"), { recursive: true, force: true });
  console.log(`Removed dist/ of ${packages.length} packages`);
  process.exit(0);
}

const started = performance.now();
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const result = spawnSync(process.execPath, [tsc, "-b", join(root, "tsconfig.build.json")], { stdio: "inherit" });
if (result.status !== 0) {
  console.error(`tsc -b failed (${result.status ?? result.signal}); see the errors above`);
  process.exit(result.status ?? 1);
}

/** Copies the non-TypeScript files under `from` to `to` (test data left out). */
function copyAssets(from, to) {
  let copied = 0;
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const src = join(from, entry.name);
    const dst = join(to, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "testdata") copied += copyAssets(src, dst);
    } else if (entry.isFile() && !/\.[cm]?ts$/.test(entry.name)) {
      if (existsSync(dst) && statSync(dst).mtimeMs >= statSync(src).mtimeMs) continue;
      mkdirSync(dirname(dst), { recursive: true });
      copyFileSync(src, dst);
      copied += 1;
    }
  }
  return copied;
}

let assets = 0;
for (const dir of packages) assets += copyAssets(join(dir, "src"), join(dir, "dist"));
const ms = Math.round(performance.now() - started);
console.log(`Built ${packages.map((d) => relative(root, d)).join(", ")} in ${ms} ms (${assets} asset file(s) copied)`);
