/**
 * The api process: HTTP in front, NATS behind.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import { runService } from "@atlas/service";
import { startApi } from "./service.ts";

await runService({ name: ServiceName.api, description: "OpenAI-compatible HTTP API", start: startApi });
