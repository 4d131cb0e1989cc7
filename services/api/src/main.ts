/**
 * The api process.
 *
 * @module
 */
import { runService } from "@atlas/service";
import { apiService } from "./service.ts";

await runService(apiService);
