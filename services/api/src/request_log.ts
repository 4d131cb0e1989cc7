/**
 * Each request's logger (`req.log`), created when the request first logs. fastify makes a pino
 * child with the request id for every request; with the redaction paths the api's logger has,
 * that child costs a serialisation of its bindings and a redaction setup per request, while
 * almost no request logs anything (request logging is off; errors and warnings do log). The
 * lazy child keeps the same bindings and level and makes the pino child on first use.
 *
 * @module
 */
import type { FastifyBaseLogger, FastifyServerOptions } from "fastify";

/** fastify's `childLoggerFactory` option (its type is not exported by name). */
type ChildLoggerFactory = NonNullable<FastifyServerOptions["childLoggerFactory"]>;

type Bindings = Parameters<ChildLoggerFactory>[1];
type ChildOptions = Parameters<ChildLoggerFactory>[2];
type LogFn = FastifyBaseLogger["info"];

/** A request's logger that makes its pino child on first use. */
class LazyChildLogger {
  readonly #parent: FastifyBaseLogger;
  readonly #bindings: Bindings;
  readonly #options: ChildOptions;
  #child: FastifyBaseLogger | undefined;

  constructor(parent: FastifyBaseLogger, bindings: Bindings, options: ChildOptions) {
    this.#parent = parent;
    this.#bindings = bindings;
    this.#options = options;
  }

  #real(): FastifyBaseLogger {
    this.#child ??= this.#parent.child(this.#bindings, this.#options);
    return this.#child;
  }

  get level(): string {
    return this.#child?.level ?? this.#options.level ?? this.#parent.level;
  }

  set level(value: string) {
    this.#real().level = value;
  }

  fatal(...args: Parameters<LogFn>): void {
    this.#real().fatal(...args);
  }
  error(...args: Parameters<LogFn>): void {
    this.#real().error(...args);
  }
  warn(...args: Parameters<LogFn>): void {
    this.#real().warn(...args);
  }
  info(...args: Parameters<LogFn>): void {
    this.#real().info(...args);
  }
  debug(...args: Parameters<LogFn>): void {
    this.#real().debug(...args);
  }
  trace(...args: Parameters<LogFn>): void {
    this.#real().trace(...args);
  }
  silent(...args: Parameters<LogFn>): void {
    this.#real().silent(...args);
  }

  child(bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
    return this.#real().child(bindings, options);
  }
}

/** fastify's `childLoggerFactory`: a {@link LazyChildLogger}. */
export const lazyRequestLogger: ChildLoggerFactory = (logger, bindings, options) =>
  new LazyChildLogger(logger, bindings, options) as unknown as FastifyBaseLogger;
