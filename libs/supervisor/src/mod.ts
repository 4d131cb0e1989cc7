/**
 * `@atlas/supervisor`: what `npm start` runs — an embedded `nats-server` (unless `NATS_URL` is
 * given) and every service as a supervised child process.
 *
 * @module
 */
export {
  type BackoffOptions,
  backoffDelayMs,
  type ChildExit,
  type ChildSpec,
  ChildState,
  type ChildStatus,
  DEFAULT_BACKOFF,
  EXIT_CONFIG,
  SupervisedChild,
  type SupervisedChildOptions,
} from "./child.ts";
export { childLogFormat, defaultChildSpecs, ignoredModelVariables, REPO_ROOT, type WorkerPlan, workerPlans } from "./child_specs.ts";
export {
  DEFAULT_NATS_PORT,
  type EmbeddedNats,
  type EmbeddedNatsOptions,
  NatsServerNotFoundError,
  NatsServerStartError,
  startEmbeddedNats,
} from "./nats.ts";
export {
  composeNatsConfig,
  DEFAULT_MAX_WORKERS,
  deploymentPermissions,
  loadServicePermissions,
  type NatsAuthConfigOptions,
  type NatsUser,
  passwordVariable,
  randomPassword,
  renderNatsAuthConfig,
} from "./nats_auth.ts";
export { announceReady } from "./ready.ts";
export {
  assertScriptsExist,
  BuildMissingError,
  nodeArgsFor,
  RUNTIME,
  type Runtime,
  SERVICE_V8_ARGS,
  serviceModule,
  serviceV8Args,
  TSX_NODE_ARGS,
} from "./runtime.ts";
export {
  type BeforeWorkersContext,
  EXIT_KILLED,
  hideCredentials,
  SUPERVISOR_SERVICE,
  type Supervisor,
  type SupervisorOptions,
  startSupervisor,
} from "./supervisor.ts";
