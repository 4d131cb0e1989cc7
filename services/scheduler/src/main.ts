/**
 * The scheduler process.
 *
 * @module
 */
import { runService } from "@atlas/service";
import { schedulerService } from "./service.ts";

await runService(schedulerService);
