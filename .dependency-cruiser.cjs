/**
 * dependency-cruiser's rules for the workspaces' sources (issue #14, "One owner per concern";
 * checked by test/structure.test.ts). Run by hand:
 *
 *   npx depcruise --config .dependency-cruiser.cjs libs services
 *
 * Type-only imports count (`tsPreCompilationDeps`), and `@atlas/<name>` resolves to the
 * package's TypeScript source (`src/mod.ts`, through tsconfig.json's `paths` and the
 * `development` export condition), so a cycle through two packages is seen as one.
 *
 * @type {import('dependency-cruiser').IConfiguration}
 */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "An import cycle, type-only imports included: each module has one owner, below the modules that use it.",
      from: { path: "^(libs|services)/" },
      to: { circular: true },
    },
    {
      name: "no-nats-in-services",
      severity: "error",
      comment: "The services reach NATS through @atlas/bus only (ADR 0003); their tests may use the client directly.",
      from: { path: "^services/[^/]+/src/", pathNot: "\\.test\\.ts$" },
      to: { path: "(^|/)@nats-io/" },
    },
    {
      name: "client-imports-contracts-only",
      severity: "error",
      comment:
        "@atlas/client is what a user installs: besides npm packages it imports @atlas/contracts only, never a service or another lib; its tests may import the api to compare shapes (checked by libs/client/src/package.test.ts).",
      from: { path: "^libs/client/", pathNot: "\\.test\\.ts$" },
      to: { path: "^(services/|libs/(?!contracts/|client/))" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)dist/" },
    includeOnly: { path: "^(libs|services)/[^/]+/src/|(^|/)node_modules/@nats-io/|^@nats-io/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["development", "types", "import", "default"],
      extensions: [".ts", ".js", ".mjs", ".cjs", ".json"],
    },
    cache: false,
  },
};
