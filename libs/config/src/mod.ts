/**
 * `@atlas/config`: the environment as one validated object.
 *
 * @module
 */
export { ConfigError, loadConfig, loadConfigOrExit, natsServers } from "./load.ts";
export { type ApiKeyEntry, type Config, type ConfigKey, configSchema } from "./schema.ts";
