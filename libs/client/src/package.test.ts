/**
 * The package's boundaries, no cluster needed: the schemas it shares with the api are the api's
 * own objects (defined once in `libs/contracts/src/atlas_http.ts`), and its sources import no service and no lib
 * but `@atlas/contracts` (`.dependency-cruiser.cjs`, rule `client-imports-contracts-only`).
 * Tests may import the api (the rule leaves `*.test.ts` out), which is what the first one does.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import type { z } from "zod";
import * as apiMemory from "../../../services/api/src/memory/routes.ts";
import * as apiResponses from "../../../services/api/src/openai/responses.ts";
import * as apiSchemas from "../../../services/api/src/openai/schemas.ts";
import * as client from "./mod.ts";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));

describe("the package", () => {
  it("says what the api says: the shapes both ends read are the api's own schemas (one definition, in @atlas/contracts)", () => {
    const pairs: [string, z.ZodType, z.ZodType][] = [
      ["AtlasOptions", client.AtlasOptions, apiSchemas.AtlasOptions],
      ["AtlasResponse", client.AtlasResponse, apiResponses.AtlasResponse],
      ["SessionObject", client.SessionObject, apiMemory.SessionObject],
      ["SessionList", client.SessionList, apiMemory.SessionList],
      ["DeletedSession", client.DeletedSession, apiMemory.DeletedSession],
      ["AppendedLayer", client.AppendedLayer, apiMemory.AppendedLayer],
    ];
    for (const [name, mine, api] of pairs) expect({ name, same: mine === api }).toEqual({ name, same: true });
  });

  it("imports no service and no lib but @atlas/contracts (dependency-cruiser, client-imports-contracts-only)", async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        join(REPO, "node_modules/dependency-cruiser/bin/dependency-cruise.mjs"),
        "--config",
        ".dependency-cruiser.cjs",
        "--output-type",
        "json",
        "libs/client",
      ],
      { cwd: REPO, maxBuffer: 64 * 1024 * 1024 },
    ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? "" }));
    const cruise = JSON.parse(stdout) as {
      modules: { source: string; dependencies: { resolved: string }[] }[];
      summary: {
        violations: { rule: { name: string }; from: string; to: string }[];
        ruleSetUsed: { forbidden?: { name: string; to: { path: string } }[] };
      };
    };
    const rule = cruise.summary.ruleSetUsed.forbidden?.find((r) => r.name === "client-imports-contracts-only");
    expect(rule).toBeDefined();
    // The rule forbids what it should, and the cruise saw the client's import of contracts.
    const forbidden = new RegExp(rule?.to.path ?? "$^");
    expect(["services/api/src/mod.ts", "libs/bus/src/mod.ts"].every((p) => forbidden.test(p))).toBe(true);
    expect(["libs/contracts/src/mod.ts", "libs/client/src/http.ts"].some((p) => forbidden.test(p))).toBe(false);
    const edges = cruise.modules.filter((m) => m.source.startsWith("libs/client/")).flatMap((m) => m.dependencies.map((d) => d.resolved));
    expect(edges).toContain("libs/contracts/src/mod.ts");
    expect(cruise.summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`)).toEqual([]);
  }, 60_000);
});
