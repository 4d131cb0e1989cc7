/**
 * The scheduler process.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import { runService } from "@atlas/service";
import { startScheduler } from "./service.ts";

await runService({
  name: ServiceName.scheduler,
  description: "Context pool: worker registry, leases, session affinity",
  start: startScheduler,
});
