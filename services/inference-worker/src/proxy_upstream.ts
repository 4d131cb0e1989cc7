/**
 * The proxy backend's view of its upstream, an OpenAI-compatible server: what it is and how many
 * requests it runs at once (discovery), and whether it answers now (the health probe). Every
 * answer is validated here (zod) before the worker believes it.
 *
 * Discovery, in order: `GET <url>/models` (the upstream answers at all; the model to name when
 * `ATLAS_UPSTREAM_MODEL` is unset; ATLAS's `context_length`), then `GET <origin>/props`
 * (llama-server: `total_slots`, the slot context `n_ctx`), else `GET <url>/atlas/status`
 * (another ATLAS: its pool's slots for the model, with an admin key or an open server), else a
 * plain OpenAI-compatible server. `ATLAS_UPSTREAM_SLOTS` wins over what is discovered;
 * `ATLAS_SLOTS` and `ATLAS_CTX_SIZE` stand in for what is not.
 *
 * The URL may hold secrets (`user:pass@`, `?api-key=`): what reaches logs, health and errors
 * names it by `shownUrl` and passes through `withoutSecrets`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import type { UpstreamKind } from "./proxy_map.ts";

/** How long one discovery or health request may take, in ms. */
export const UPSTREAM_PROBE_TIMEOUT_MS = 2000;

/** Where the upstream is and what the operator said of it. */
export interface UpstreamConfig {
  /** The OpenAI base URL, `/v1` included. */
  url: string;
  apiKey?: string | undefined;
  /** The model name to send upstream; default the first listed. */
  model?: string | undefined;
  /** The upstream's parallel requests, when the operator knows them. */
  slots?: number | undefined;
  /** Slots when nothing says (`ATLAS_SLOTS`). */
  fallbackSlots: number;
  /** Tokens per slot when nothing says (`ATLAS_CTX_SIZE`). */
  fallbackCtx: number;
}

/** What discovery found. */
export interface Discovered {
  kind: UpstreamKind;
  /** The model name sent upstream. */
  model: string;
  slots: number;
  /** Where `slots` came from. */
  slotsFrom: "ATLAS_UPSTREAM_SLOTS" | "props" | "atlas-status" | "ATLAS_SLOTS";
  /** Tokens per slot. */
  ctxSize: number;
  /** The model's `created` (s), as the upstream lists it. */
  created: number;
  /**
   * Stands for the model file's fingerprint: the URL and the model, hashed. Nothing is restored
   * into a proxy worker's slots, so it only has to tell proxies of different upstreams apart.
   */
  fingerprint: string;
}

const Models = z.object({
  data: z.array(
    z.object({
      id: z.string().min(1),
      created: z.number().int().nonnegative().nullish(),
      context_length: z.number().int().positive().nullish(),
    }),
  ),
});
const Props = z.object({
  total_slots: z.number().int().positive(),
  default_generation_settings: z.object({ n_ctx: z.number().int().positive().nullish() }).nullish(),
});
const AtlasStatus = z.object({
  version: z.string(),
  status: z.enum(["ok", "degraded", "down"]),
  scheduler: z.object({ pools: z.record(z.string(), z.object({ slots: z.number().int().nonnegative() })).nullish() }).nullish(),
});

/** The upstream URL without credentials or query, for logs, health and errors. */
export function shownUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

/** `text` without the secrets of `url` (its password and query; the whole URL becomes `shownUrl`). */
export function withoutSecrets(text: string, url: string): string {
  const u = new URL(url);
  let out = text.replaceAll(url, shownUrl(url)).replaceAll(u.href, shownUrl(url));
  if (u.password !== "") out = out.replaceAll(`:${u.password}@`, ":[redacted]@");
  const secrets = [u.password, u.search.slice(1), ...u.searchParams.values()].flatMap((s) => [s, safeDecode(s)]);
  for (const s of secrets.filter((x) => x.length >= 4).sort((a, b) => b.length - a.length)) out = out.replaceAll(s, "[redacted]");
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * `<url>/<path>` under the base URL (`/v1/models`), or `/<path>` at its origin when `root`; the
 * base URL's query (`?api-key=`) goes along.
 */
export function upstreamUrl(base: string, path: string, root = false): string {
  const u = new URL(base);
  u.pathname = root ? `/${path}` : `${u.pathname.replace(/\/+$/, "")}/${path}`;
  return u.toString();
}

/** GETs JSON and validates it; throws on a network failure, a non-2xx answer or a wrong shape. */
async function getJson<S extends z.ZodType>(url: string, schema: S, apiKey: string | undefined, signal?: AbortSignal): Promise<z.infer<S>> {
  const timeout = AbortSignal.timeout(UPSTREAM_PROBE_TIMEOUT_MS);
  const res = await fetch(url, {
    headers: { accept: "application/json", ...(apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` }) },
    signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`GET ${shownUrl(url)}: HTTP ${res.status}`);
  }
  const parsed = schema.safeParse(await res.json());
  if (!parsed.success) throw new Error(`GET ${shownUrl(url)}: unexpected answer: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** Finds out what the upstream is; throws when it does not answer `/models` (or lists no model to use). */
export async function discoverUpstream(c: UpstreamConfig, signal?: AbortSignal): Promise<Discovered> {
  const models = await getJson(upstreamUrl(c.url, "models"), Models, c.apiKey, signal);
  const model = c.model ?? models.data[0]?.id;
  if (model === undefined) throw new Error(`The upstream at ${shownUrl(c.url)} lists no model: set ATLAS_UPSTREAM_MODEL`);
  const listed = models.data.find((m) => m.id === model);
  const props = await getJson(upstreamUrl(c.url, "props", true), Props, c.apiKey, signal).catch(() => undefined);
  const atlas =
    props === undefined
      ? await getJson(upstreamUrl(c.url, "atlas/status"), AtlasStatus, c.apiKey, signal).catch(() => undefined)
      : undefined;
  const kind: UpstreamKind = props !== undefined ? "llama-server" : atlas !== undefined ? "atlas" : "openai";
  const poolSlots = atlas?.scheduler?.pools?.[model]?.slots;
  const found: Pick<Discovered, "slots" | "slotsFrom"> =
    c.slots !== undefined
      ? { slots: c.slots, slotsFrom: "ATLAS_UPSTREAM_SLOTS" }
      : props !== undefined
        ? { slots: props.total_slots, slotsFrom: "props" }
        : poolSlots !== undefined && poolSlots > 0
          ? { slots: poolSlots, slotsFrom: "atlas-status" }
          : { slots: c.fallbackSlots, slotsFrom: "ATLAS_SLOTS" };
  return {
    kind,
    model,
    ...found,
    ctxSize: props?.default_generation_settings?.n_ctx ?? listed?.context_length ?? c.fallbackCtx,
    created: listed?.created ?? Math.floor(Date.now() / 1000),
    fingerprint: `upstream-${createHash("sha256").update(`${c.url}\n${model}`).digest("hex").slice(0, 32)}`,
  };
}

/** The upstream's reachability, as the last probe or request found it. */
export interface UpstreamState {
  ok: boolean;
  /** What failed, or the round trip of the last probe (no secrets of the URL: `withoutSecrets`). */
  detail: string;
  /** When it was last checked (epoch ms), 0 before the first probe. */
  checked_at: number;
}

/**
 * Probes the upstream (`GET <url>/models`) every `intervalMs` and keeps what it found; a request
 * that cannot reach the upstream says so at once (`down`). `onChange` hears every flip.
 */
export class UpstreamHealth {
  readonly #c: UpstreamConfig;
  #state: UpstreamState = { ok: false, detail: "not probed yet", checked_at: 0 };
  #timer: ReturnType<typeof setInterval> | undefined;
  #inFlight = false;
  readonly #onChange: (state: UpstreamState) => void;
  readonly #stopped = new AbortController();
  /** The model the upstream must list to count as up (not for llama-server, which serves any name). */
  #model: string | undefined;

  constructor(c: UpstreamConfig, onChange: (state: UpstreamState) => void) {
    this.#c = c;
    this.#onChange = onChange;
  }

  get state(): UpstreamState {
    return this.#state;
  }

  /** From now on the upstream counts as up only while `/models` lists `model` (after discovery). */
  expect(d: Pick<Discovered, "kind" | "model">): void {
    this.#model = d.kind === "llama-server" ? undefined : d.model;
  }

  /** Probes now and then every `intervalMs`. */
  start(intervalMs: number): void {
    if (this.#stopped.signal.aborted) return;
    void this.probe();
    this.#timer = setInterval(() => void this.probe(), intervalMs);
    this.#timer.unref?.();
  }

  /** One probe (skipped while one runs); resolves with the state it left. */
  async probe(): Promise<UpstreamState> {
    if (this.#inFlight || this.#stopped.signal.aborted) return this.#state;
    this.#inFlight = true;
    const t0 = performance.now();
    try {
      const models = await getJson(upstreamUrl(this.#c.url, "models"), Models, this.#c.apiKey, this.#stopped.signal);
      const model = this.#model;
      if (model !== undefined && !models.data.some((m) => m.id === model)) throw new Error(`it does not list the model "${model}" (now)`);
      this.#set({
        ok: true,
        detail: `${shownUrl(this.#c.url)} answers (${Math.round(performance.now() - t0)} ms)`,
        checked_at: Date.now(),
      });
    } catch (err) {
      if (!this.#stopped.signal.aborted) this.down(err);
    } finally {
      this.#inFlight = false;
    }
    return this.#state;
  }

  /** The upstream failed a request or a probe (did not answer, or refused the proxy's model, path or key). */
  down(err: unknown): void {
    const why = err instanceof Error ? (err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message) : String(err);
    const detail = withoutSecrets(`${shownUrl(this.#c.url)} fails: ${why}`, this.#c.url);
    this.#set({ ok: false, detail: detail.slice(0, 500), checked_at: Date.now() });
  }

  #set(next: UpstreamState): void {
    const flipped = next.ok !== this.#state.ok;
    this.#state = next;
    if (flipped) this.#onChange(next);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#stopped.abort();
  }
}
