/**
 * The metrics process.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import { runService } from "@atlas/service";
import { startMetrics } from "./service.ts";

await runService({
  name: ServiceName.metrics,
  description: "Sliding-window analytics over every service's metric events",
  start: startMetrics,
});
