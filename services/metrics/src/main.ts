/**
 * The metrics process.
 *
 * @module
 */
import { runService } from "@atlas/service";
import { metricsService } from "./service.ts";

await runService(metricsService);
