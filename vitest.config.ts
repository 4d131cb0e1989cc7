import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["libs/**/*.test.ts", "services/**/*.test.ts", "test/**/*.test.ts"],
    // Each file starts its own nats-server (and sometimes a model); two cores, so two forks.
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ["default"],
  },
});
