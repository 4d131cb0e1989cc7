/**
 * The HTTP layer of `@atlas/client`: one `fetch` per call with the key, a timeout and the caller's
 * `AbortSignal`; a 2xx body parsed with the call's zod schema, anything else an {@link AtlasError}.
 *
 * @module
 */
import type { z } from "zod";
import { AtlasError } from "./errors.ts";

/** How the client reaches the server. */
export interface TransportOptions {
  /** The server's root, `http://127.0.0.1:8080` (a trailing `/v1` is accepted and dropped). */
  baseURL: string;
  /** Sent as `Authorization: Bearer <key>`; none for a server without keys. */
  apiKey?: string | undefined;
  /** Another `fetch` (a proxy agent, a test's); default the global one. */
  fetch?: typeof fetch | undefined;
  /** Milliseconds until a call without an answer fails with `timeout` (for a stream: until its headers). */
  timeoutMs: number;
  /** Headers sent with every call. */
  headers?: Record<string, string> | undefined;
}

/** Per call. */
export interface CallOptions {
  signal?: AbortSignal | undefined;
  /** Overrides the client's timeout for this call. */
  timeoutMs?: number | undefined;
  headers?: Record<string, string> | undefined;
}

/** A request. */
interface Request extends CallOptions {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  query?: Record<string, string | number | undefined> | undefined;
  body?: unknown;
}

/** The server's root without a trailing `/` or `/v1`. */
export function serverRoot(baseURL: string): string {
  return baseURL.replace(/\/+$/, "").replace(/\/v1$/, "");
}

/** Sends requests to one server. */
export class Transport {
  readonly root: string;
  readonly #options: TransportOptions;

  constructor(options: TransportOptions) {
    this.root = serverRoot(options.baseURL);
    this.#options = options;
  }

  /** A call whose 2xx body is JSON matching `schema`; returns it parsed, with the response (its headers). */
  async json<S extends z.ZodType>(schema: S, req: Request): Promise<{ data: z.output<S>; response: Response }> {
    const response = await this.send(req, true);
    const requestId = response.headers.get("x-request-id") ?? undefined;
    let json: unknown;
    try {
      json = await response.json();
    } catch (err) {
      throw AtlasError.client("invalid_response", `${req.method} ${req.path}: the answer is not JSON`, {
        status: response.status,
        cause: err,
      });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      const where = first === undefined ? "" : ` at '${first.path.join(".")}': ${first.message}`;
      throw AtlasError.client("invalid_response", `${req.method} ${req.path}: the answer does not match its schema${where}`, {
        status: response.status,
        cause: parsed.error,
        ...(requestId === undefined ? {} : { requestId }),
      });
    }
    return { data: parsed.data, response };
  }

  /**
   * Sends a request; resolves with a 2xx response once its headers are in (the timeout covers
   * that wait; with `wholeBody` it also covers reading the body). A non-2xx answer is thrown.
   */
  async send(req: Request, wholeBody = false): Promise<Response> {
    const timeoutMs = req.timeoutMs ?? this.#options.timeoutMs;
    const ac = new AbortController();
    const timeout = new Error("timeout");
    const timer = setTimeout(() => ac.abort(timeout), timeoutMs);
    const onAbort = () => ac.abort(req.signal?.reason);
    if (req.signal?.aborted) onAbort();
    req.signal?.addEventListener("abort", onAbort, { once: true });
    const stop = () => {
      clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
    };
    const fail = (err: unknown): AtlasError => {
      if (err instanceof AtlasError) return err;
      const what = `${req.method} ${req.path}`;
      if (ac.signal.reason === timeout) return AtlasError.client("timeout", `${what}: no answer within ${timeoutMs} ms`, { cause: err });
      if (ac.signal.aborted) return AtlasError.client("aborted", `${what}: aborted`, { cause: err });
      return AtlasError.client("connection_error", `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    };
    try {
      const res = await (this.#options.fetch ?? fetch)(this.#url(req), {
        method: req.method,
        headers: this.#headers(req),
        ...(req.body === undefined ? {} : { body: JSON.stringify(req.body) }),
        signal: ac.signal,
      });
      if (!res.ok) throw await AtlasError.fromResponse(res);
      if (!wholeBody) {
        clearTimeout(timer); // the body streams for as long as it lasts; the caller's signal still ends it
        return res;
      }
      // Read the body under the timeout too, then hand it over as a finished response.
      const body = await res.arrayBuffer();
      stop();
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    } catch (err) {
      stop();
      throw fail(err);
    }
  }

  #url(req: Request): string {
    const url = new URL(this.root + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    return url.toString();
  }

  #headers(req: Request): Record<string, string> {
    const h: Record<string, string> = { accept: "application/json", ...this.#options.headers, ...req.headers };
    if (req.body !== undefined) h["content-type"] = "application/json";
    if (this.#options.apiKey !== undefined && this.#options.apiKey !== "") h.authorization = `Bearer ${this.#options.apiKey}`;
    return h;
  }
}
