/**
 * Loading the configuration: parse the environment once, and fail with one message that lists
 * every bad variable.
 *
 * @module
 */
import { type Config, configSchema } from "./schema.ts";

/** Raised when the environment does not parse; its message lists every problem. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** One line per problem: `PORT: must be at most 65535 (got "70000")`. */
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(
      `Invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
    this.problems = problems;
  }
}

const SECRET = /KEY|PASSWORD|TOKEN|SECRET/;

/** Parses `env` (default `process.env`). Empty strings count as unset. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const input: Record<string, string> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v.trim() !== "") input[key] = v.trim();
  }
  const parsed = configSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const key = String(issue.path[0] ?? "");
    const got = input[key];
    const shown = got === undefined ? "" : SECRET.test(key) ? " (value hidden)" : ` (got "${got}")`;
    return `${key}: ${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}${shown}`;
  });
  throw new ConfigError(problems);
}

/** The NATS servers to connect to: `NATS_URL` split on commas, or the local default. */
export function natsServers(config: Config): string[] {
  return (config.NATS_URL ?? "nats://127.0.0.1:4222")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** Loads the configuration or exits the process with the list of problems (for `main`s). */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\nSee docs/configuration.md for every variable.\n`);
      process.exit(78); // EX_CONFIG: the supervisor does not restart a child that exits with it
    }
    throw err;
  }
}
