/**
 * The persistence process.
 *
 * @module
 */
import { runService } from "@atlas/service";
import { persistenceService } from "./service.ts";

await runService(persistenceService);
