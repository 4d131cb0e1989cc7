/**
 * The persistence process.
 *
 * @module
 */
import { ServiceName } from "@atlas/contracts";
import { runService } from "@atlas/service";
import { startPersistence } from "./service.ts";

await runService({ name: ServiceName.persistence, description: "Session memory, KV-state objects and backups", start: startPersistence });
