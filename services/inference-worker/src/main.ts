/**
 * The inference-worker process.
 *
 * @module
 */
import { runService } from "@atlas/service";
import { workerService } from "./service.ts";

await runService(workerService);
