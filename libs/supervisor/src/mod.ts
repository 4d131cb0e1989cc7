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
  loadServicePermissions,
  type NatsAuthConfigOptions,
  type NatsUser,
  passwordVariable,
  randomPassword,
  renderNatsAuthConfig,
} from "./nats_auth.ts";
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
  childLogFormat,
  defaultChildSpecs,
  EXIT_KILLED,
  hideCredentials,
  ignoredModelVariables,
  REPO_ROOT,
  SUPERVISOR_SERVICE,
  type Supervisor,
  type SupervisorOptions,
  startSupervisor,
  type WorkerPlan,
  workerPlans,
} from "./supervisor.ts";
