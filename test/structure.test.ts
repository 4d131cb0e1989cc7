/**
 * The structure rules of issue #14, "One owner per concern", checked on the sources as they are:
 *
 * - **no import cycle** among the modules of libs/ and services/ (`libs/*\/src`, `services/*\/src`,
 *   tests included), type-only imports included, and across packages: dependency-cruiser resolves
 *   `@atlas/<name>` to the package's `src/mod.ts` (`.dependency-cruiser.cjs`; by hand:
 *   `npx depcruise --config .dependency-cruiser.cjs libs services`);
 * - **no service imports `@nats-io/*`** outside its tests (`*.test.ts` may, to fake or inspect the
 *   server): the services reach NATS through `@atlas/bus` (same cruise, rule `no-nats-in-services`);
 * - **the session key is spelled in one function**, `sessionKey` in libs/contracts: no other
 *   non-test source joins a tenant and something after it with "/" (template literal,
 *   concatenation or `[…].join("/")`), not even to quote a session in a message;
 * - **no source file is over 400 lines**: non-test `.ts` under `libs/*\/src`, `services/*\/src` and
 *   `bench/`;
 * - **docs/architecture.md's walk of a chat request** names files and functions that exist, and
 *   its hop counts are its own steps counted.
 *
 * Each check first proves it sees what it looks for (the cruise resolved `@atlas/*` to sources,
 * kept type-only imports and saw bus's `@nats-io` imports; the session-key pattern matches
 * `sessionKey`'s own body), so a broken configuration fails instead of passing on nothing.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAX_LINES = 400;

interface Edge {
  resolved: string;
  dependencyTypes: string[];
}
interface Violation {
  from: string;
  to: string;
  rule: { name: string };
  cycle?: { name: string; dependencyTypes: string[] }[];
}
interface Cruise {
  modules: { source: string; dependencies: Edge[] }[];
  summary: { violations: Violation[]; totalCruised: number; ruleSetUsed: { forbidden?: { name: string }[] } };
}

/** The non-test TypeScript sources of the given folders (relative to the root, `/`-separated). */
function sources(...dirs: string[]): string[] {
  return dirs
    .filter((d) => existsSync(join(ROOT, d)))
    .flatMap((d) =>
      readdirSync(join(ROOT, d), { recursive: true, encoding: "utf8" })
        .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts") && !f.endsWith(".d.ts"))
        .filter((f) => !/(^|[/\\])(node_modules|dist|results)([/\\]|$)/.test(f))
        .map((f) => relative(ROOT, join(ROOT, d, f)).replaceAll("\\", "/")),
    )
    .sort();
}

/** The non-test sources of `libs/*\/src`, `services/*\/src` and `bench/`. */
function workspaceSources(): string[] {
  const src = ["libs", "services"].flatMap((top) => readdirSync(join(ROOT, top)).map((p) => `${top}/${p}/src`));
  return sources(...src, "bench");
}

let cruise: Cruise;

beforeAll(() => {
  // The same command as by hand (`npx depcruise …`), with JSON output to read the violations.
  const bin = join(ROOT, "node_modules/dependency-cruiser/bin/dependency-cruise.mjs");
  const r = spawnSync(process.execPath, [bin, "--config", ".dependency-cruiser.cjs", "--output-type", "json", "libs", "services"], {
    cwd: ROOT,
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  // It exits with the number of errors found: a non-zero code alone is not a failure to run.
  if (r.stdout.trim() === "") throw new Error(`dependency-cruiser printed nothing (exit ${r.status}): ${r.stderr}`);
  cruise = JSON.parse(r.stdout) as Cruise;
}, 60_000);

const edges = () => cruise.modules.flatMap((m) => m.dependencies.map((d) => ({ from: m.source, ...d })));

describe("the import graph of libs/ and services/", () => {
  it("is what the rules are checked on: @atlas/* resolved to sources, type-only imports kept, both rules loaded", () => {
    expect(cruise.summary.totalCruised).toBeGreaterThan(100);
    expect((cruise.summary.ruleSetUsed.forbidden ?? []).map((r) => r.name)).toEqual(
      expect.arrayContaining(["no-circular", "no-nats-in-services"]),
    );
    const all = edges();
    // A workspace import lands on the other package's TypeScript source, not on dist/ or node_modules.
    expect(all.filter((e) => e.from.startsWith("services/") && e.resolved === "libs/contracts/src/mod.ts").length).toBeGreaterThan(0);
    expect(all.filter((e) => /(^|\/)dist\//.test(e.resolved))).toEqual([]);
    expect(all.filter((e) => e.dependencyTypes.includes("type-only")).length).toBeGreaterThan(0);
    // The bus's own NATS imports are seen, so the rule below would see a service's.
    expect(all.filter((e) => e.from.startsWith("libs/bus/src/") && e.resolved.includes("@nats-io/")).length).toBeGreaterThan(0);
    expect(all.filter((e) => e.resolved.startsWith("@atlas/"))).toEqual([]);
  });

  it("has no import cycle, type-only imports included", () => {
    const cycles = new Map<string, string>();
    for (const v of cruise.summary.violations.filter((v) => v.rule.name === "no-circular")) {
      const names = (v.cycle ?? []).map((c) => c.name);
      const start = names.indexOf([...names].sort()[0] ?? "");
      const ring = [...names.slice(start), ...names.slice(0, start)];
      // One entry per cycle, whichever module it was found from; `(type)` marks a type-only hop.
      const types = new Map((v.cycle ?? []).map((c) => [c.name, c.dependencyTypes.includes("type-only") ? " (type)" : ""]));
      const chain = [...ring, ring[0]].map((n, i) => (i === 0 ? n : `${types.get(n as string)} → ${n}`)).join("");
      cycles.set(ring.join(" "), chain);
    }
    expect([...cycles.values()].sort()).toEqual([]);
  });

  it("has no service source importing @nats-io/* (only tests may; the services use @atlas/bus)", () => {
    const offenders = cruise.summary.violations.filter((v) => v.rule.name === "no-nats-in-services").map((v) => `${v.from} → ${v.to}`);
    expect(offenders).toEqual([]);
  });
});

describe("the session key", () => {
  /**
   * Joins a tenant and what follows with "/": `${…tenant…}/${…}` (not `${sessionKey(tenant, …)}/…`,
   * which extends the key), `tenant + "/"`, `"/" + session…`, `[tenant, …].join("/")`.
   */
  const JOINS = [
    /\$\{(?!\s*sessionKey\()[^{}]*\btenant\w*[^{}]*\}\/\$\{/gi, // (a key made by sessionKey may be extended)
    /\btenant\w*(?:\??\.[\w#]+|\[[^\]]*\])*\s*\+\s*(["'`])\/\1/gi,
    /(["'`])\/\1\s*\+\s*[\w.#?]*session/gi,
    /\[\s*[\w.#?]*tenant\w*\s*,[^\]]*\]\s*\.join\(\s*(["'`])\/\1\s*\)/gi,
  ];
  const hits = (line: string) => JOINS.some((re) => line.match(re) !== null);

  it("is built only in sessionKey (libs/contracts): no other source joins a tenant and a session with '/'", () => {
    const files = workspaceSources();
    const owners: { file: string; from: number; to: number }[] = [];
    for (const file of files) {
      const lines = readFileSync(join(ROOT, file), "utf8").split("\n");
      lines.forEach((l, i) => {
        if (!/\bfunction sessionKey\s*\(/.test(l)) return;
        const end = lines.findIndex((x, j) => j > i && /^}/.test(x));
        owners.push({ file, from: i, to: end });
      });
    }
    expect(owners.map((o) => o.file)).toEqual(["libs/contracts/src/scheduler.ts"]);
    const owner = owners[0]!;

    const offenders: string[] = [];
    let inOwner = 0;
    for (const file of files) {
      readFileSync(join(ROOT, file), "utf8")
        .split("\n")
        .forEach((l, i) => {
          if (!hits(l)) return;
          if (file === owner.file && i > owner.from && i < owner.to) inOwner++;
          else offenders.push(`${file}:${i + 1}: ${l.trim()}`);
        });
    }
    // The pattern finds the one real spelling, so it would find a second.
    expect(inOwner).toBe(1);
    expect(offenders).toEqual([]);
  });
});

describe("source files", () => {
  it(`are at most ${MAX_LINES} lines (non-test .ts under libs/*/src, services/*/src and bench/)`, () => {
    const files = workspaceSources();
    expect(files.length).toBeGreaterThan(100);
    const offenders = files
      .map((file) => {
        const text = readFileSync(join(ROOT, file), "utf8");
        return { file, lines: text.split("\n").length - (text.endsWith("\n") ? 1 : 0) };
      })
      .filter((f) => f.lines > MAX_LINES)
      .map((f) => `${f.file}: ${f.lines} lines`);
    expect(offenders).toEqual([]);
  });
});

describe("docs/architecture.md, 'A chat request'", () => {
  const PREFIXES: Record<string, string> = {
    api: "services/api/src",
    scheduler: "services/scheduler/src",
    persistence: "services/persistence/src",
    worker: "services/inference-worker/src",
    bus: "libs/bus/src",
  };

  it("walks the request through files that exist and name the functions they say, and counts its hops right", () => {
    const doc = readFileSync(join(ROOT, "docs/architecture.md"), "utf8");
    const section = doc.slice(doc.indexOf("## A chat request"));
    const end = section.indexOf("\n## ", 3);
    const text = end < 0 ? section : section.slice(0, end);
    const steps = [...text.matchAll(/^(\d+)\. (?:([→←⇒]) )?`([a-z]+)\/([^`]+\.ts)`(?: `(\w+)`)?/gm)].map((m) => ({
      n: Number(m[1]),
      at: m.index,
      arrow: m[2],
      file: `${PREFIXES[m[3] as string] ?? `?${m[3]}`}/${m[4]}`,
      fn: m[5],
    }));
    // Numbered 1, 2, 3… without a gap; every step after the first is reached by a hop.
    expect(steps.map((s) => s.n)).toEqual(steps.map((_, i) => i + 1));
    expect(steps.filter((s) => s.n > 1 && s.arrow === undefined).map((s) => s.n)).toEqual([]);
    const broken = steps.filter(
      (s) => !existsSync(join(ROOT, s.file)) || (s.fn !== undefined && !readFileSync(join(ROOT, s.file), "utf8").includes(s.fn)),
    );
    expect(broken.map((s) => `${s.n}. ${s.file} ${s.fn ?? ""}`)).toEqual([]);
    // "**N hops from the route to the reply**" follows N + 1 steps; "stored in M more" counts the steps after it.
    const stated = /\*\*(\d+) hops from the route to the reply\*\*/.exec(text);
    expect(stated, "the section states its hop count").not.toBeNull();
    const toReply = steps.filter((s) => s.at < (stated?.index ?? 0));
    expect(toReply.length - 1).toBe(Number(stated?.[1]));
    const more = /stored in (\d+) more/.exec(text);
    expect(Number(more?.[1])).toBe(steps.length - toReply.length);
  });
});
