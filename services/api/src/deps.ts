/**
 * What the api's routes need (`buildApp`'s argument, decorated on the app as `app.deps`): types
 * only, at the bottom of the api's imports, so the modules that take it (the memory client, the
 * decorations in `fastify.ts`) do not import `app.ts`, which imports them.
 *
 * @module
 */
import type { Bus } from "@atlas/bus";
import type { Config } from "@atlas/config";
import type { Logger } from "@atlas/log";

/** What the routes need. */
export interface AppDeps {
  bus: Bus;
  config: Config;
  log: Logger;
}
