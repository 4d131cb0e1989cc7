/**
 * Starts a real JetStream cluster for one test file: `nodes` `nats-server` processes (default 3)
 * on loopback, each with its own temporary store, a unique `server_name`, a client port, a
 * monitoring port and a route port, every node routed to every other (`cluster { name, listen,
 * routes }`). It resolves once JetStream has a meta leader that every node knows and that counts
 * every other node as a current peer, and every node counts the whole cluster (`cluster_size`).
 * One node can be killed (SIGKILL, store kept, as a crash) and started again on the same ports
 * and store; the stores are removed when the cluster closes.
 *
 * @module
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type SpawnedNatsServer, spawnNatsServer } from "./nats_server.ts";
import { freePort } from "./ports.ts";

/** Options for {@link startNatsCluster}. */
export interface NatsClusterOptions {
  /** How many nodes; default 3 (JetStream needs a majority: 3 survives the loss of one). */
  nodes?: number;
  /** Extra configuration text every node gets (users, permissions). */
  config?: string;
  /** Path of the binary; default `NATS_SERVER_BIN` or `nats-server` on the PATH. */
  binary?: string;
  /** How long to wait for the cluster (or a restarted node) to be ready; default 30 s. */
  readyTimeoutMs?: number;
}

/** One node of a {@link NatsCluster}. Its ports and store stay the same across restarts. */
export interface NatsClusterNode {
  readonly index: number;
  /** `server_name` (`n1`, `n2`…): what JetStream's cluster info names. */
  readonly name: string;
  readonly url: string;
  readonly port: number;
  /** Route port (`cluster { listen }`). */
  readonly clusterPort: number;
  /** Monitoring endpoint, `http://127.0.0.1:<port>` (`/jsz`, `/healthz`). */
  readonly monitorUrl: string;
  readonly storeDir: string;
  /** The current process id (-1 while it is down). */
  readonly pid: number;
  readonly running: boolean;
}

/** JetStream's cluster as one node sees it (`/jsz`'s `meta_cluster`). */
export interface MetaCluster {
  name?: string;
  leader?: string;
  cluster_size?: number;
  replicas?: { name: string; current: boolean; offline?: boolean }[];
}

/** A running cluster. */
export interface NatsCluster extends AsyncDisposable {
  readonly nodes: readonly NatsClusterNode[];
  /** Every node's client URL, in node order. */
  readonly urls: string[];
  /** Kills node `i` at once (SIGKILL: no clean shutdown), keeping its store. */
  kill(i: number): Promise<void>;
  /** Stops node `i` (SIGTERM), keeping its store. */
  stop(i: number): Promise<void>;
  /** Starts node `i` again on its ports and store; resolves when it is back in the cluster (the meta leader counts it current). */
  restart(i: number): Promise<void>;
  /** Resolves when every running node knows the meta leader and every peer, and the leader counts it current. */
  waitReady(options?: { timeoutMs?: number }): Promise<void>;
  /** Node `i`'s `/healthz` (JetStream: meta, streams and consumers current). */
  healthz(i: number): Promise<{ ok: boolean; body: string }>;
  /** The meta leader's `server_name`, as a running node sees it; undefined during an election. */
  metaLeader(): Promise<string | undefined>;
  /** `/jsz` of node `i` (query: `streams=true&config=true`…). */
  jsz(i: number, query?: string): Promise<{ meta_cluster?: MetaCluster } & Record<string, unknown>>;
  /** Permission violations every node logged, across restarts. */
  violations(): string[];
  /** Stops every node and removes the stores. */
  close(): Promise<void>;
}

/** Starts a `nodes`-node JetStream cluster on loopback and waits until it is ready (see {@link NatsCluster.waitReady}). */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const count = options.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1) throw new Error(`nodes must be a positive integer (got ${count})`);
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  const clusterName = `atlas-${crypto.randomUUID().slice(0, 8)}`;
  const slots: {
    index: number;
    name: string;
    port: number;
    clusterPort: number;
    httpPort: number;
    storeDir: string;
    server: SpawnedNatsServer | undefined;
  }[] = [];
  for (let i = 0; i < count; i++) {
    // Every port is chosen up front: the routes name the others', and a restart reuses them.
    slots.push({
      index: i,
      name: `n${i + 1}`,
      port: await freePort(),
      clusterPort: await freePort(),
      httpPort: await freePort(),
      storeDir: await mkdtemp(join(tmpdir(), `atlas-nats-n${i + 1}-`)),
      server: undefined,
    });
  }
  const past: string[] = []; // violations of earlier incarnations
  const configOf = (s: (typeof slots)[number]) =>
    [
      `server_name: ${JSON.stringify(s.name)}`,
      `host: "127.0.0.1"`,
      `port: ${s.port}`,
      `http: "127.0.0.1:${s.httpPort}"`,
      `jetstream { store_dir: ${JSON.stringify(s.storeDir)} }`,
      "cluster {",
      `  name: ${JSON.stringify(clusterName)}`,
      `  listen: "127.0.0.1:${s.clusterPort}"`,
      `  routes: [${slots
        .filter((o) => o !== s)
        .map((o) => JSON.stringify(`nats-route://127.0.0.1:${o.clusterPort}`))
        .join(", ")}]`,
      "}",
      options.config ?? "",
      "",
    ].join("\n");
  const launch = async (s: (typeof slots)[number]) => {
    const file = join(s.storeDir, "node.conf");
    await writeFile(file, configOf(s));
    s.server = await spawnNatsServer(["-c", file], options.binary === undefined ? {} : { binary: options.binary });
  };
  const monitor = (s: (typeof slots)[number]) => `http://127.0.0.1:${s.httpPort}`;
  const jsz = async (i: number, query = "") => {
    const s = slots[i];
    if (s === undefined) throw new Error(`no node ${i}`);
    const res = await fetch(`${monitor(s)}/jsz${query === "" ? "" : `?${query}`}`, { signal: AbortSignal.timeout(2000) });
    return (await res.json()) as { meta_cluster?: MetaCluster } & Record<string, unknown>;
  };
  /**
   * Whether node `s` is back in the cluster: it knows the meta leader and every peer, and the
   * leader counts it as a current peer (its copy of the meta data caught up). `/healthz` is not
   * asked: on 2.9.10 it can report an idle durable consumer's replica "not current" on a
   * restarted node for long after its streams caught up ({@link NatsCluster.healthz} tells it).
   */
  const ready = async (s: (typeof slots)[number]): Promise<boolean> => {
    if (s.server?.running() !== true) return true;
    try {
      const meta = (await jsz(s.index)).meta_cluster;
      const leader = meta?.leader;
      if (leader === undefined || leader === "") return false;
      // A node that has not learnt every peer yet (cluster_size 2 of 3 right after start) refuses
      // to place an R3 stream ("no suitable peers for placement").
      if (meta?.cluster_size !== slots.length) return false;
      if (leader === s.name) return true;
      const l = slots.find((o) => o.name === leader);
      if (l === undefined) return false;
      const peer = (await jsz(l.index)).meta_cluster?.replicas?.find((r) => r.name === s.name);
      return peer?.current === true && peer.offline !== true;
    } catch {
      return false;
    }
  };
  const healthz = async (i: number) => {
    const res = await fetch(`${monitor(slot(i))}/healthz`, { signal: AbortSignal.timeout(2000) });
    return { ok: res.ok, body: await res.text() };
  };
  const waitReady = async (o: { timeoutMs?: number; only?: (typeof slots)[number] } = {}) => {
    const deadline = Date.now() + (o.timeoutMs ?? readyTimeoutMs);
    for (;;) {
      const checks = await Promise.all((o.only === undefined ? slots : [o.only]).map(ready));
      if (checks.every(Boolean)) return;
      if (Date.now() > deadline) {
        const seen = await Promise.all(
          slots.map(async (s) => ({
            node: s.name,
            meta: await jsz(s.index).then(
              (j) => j.meta_cluster,
              () => "down",
            ),
            healthz: await healthz(s.index).then(
              (h) => h.body,
              () => "down",
            ),
          })),
        );
        throw new Error(`The NATS cluster was not ready within ${o.timeoutMs ?? readyTimeoutMs} ms: ${JSON.stringify(seen)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const slot = (i: number) => {
    const s = slots[i];
    if (s === undefined) throw new Error(`The cluster has nodes 0..${count - 1}, not ${i}`);
    return s;
  };
  const halt = async (s: (typeof slots)[number], signal: NodeJS.Signals) => {
    const server = s.server;
    if (server === undefined) return;
    await server.terminate(signal);
    past.push(...server.violations);
    s.server = undefined;
  };
  const close = async () => {
    await Promise.all(slots.map((s) => halt(s, "SIGTERM")));
    await Promise.all(slots.map((s) => rm(s.storeDir, { recursive: true, force: true })));
  };

  try {
    await Promise.all(slots.map(launch));
    await waitReady();
  } catch (err) {
    await close();
    throw err;
  }
  const nodes: NatsClusterNode[] = slots.map((s) => ({
    index: s.index,
    name: s.name,
    url: `nats://127.0.0.1:${s.port}`,
    port: s.port,
    clusterPort: s.clusterPort,
    monitorUrl: monitor(s),
    storeDir: s.storeDir,
    get pid() {
      return s.server?.pid ?? -1;
    },
    get running() {
      return s.server?.running() === true;
    },
  }));
  return {
    nodes,
    urls: nodes.map((n) => n.url),
    kill: (i) => halt(slot(i), "SIGKILL"),
    stop: (i) => halt(slot(i), "SIGTERM"),
    restart: async (i) => {
      const s = slot(i);
      await halt(s, "SIGTERM");
      await launch(s);
      await waitReady({ only: s });
    },
    waitReady: (o = {}) => waitReady(o),
    healthz,
    metaLeader: async () => {
      for (const s of slots) {
        if (s.server?.running() !== true) continue;
        const leader = await jsz(s.index).then(
          (j) => j.meta_cluster?.leader,
          () => undefined,
        );
        if (leader !== undefined && leader !== "") return leader;
      }
      return undefined;
    },
    jsz,
    violations: () => [...past, ...slots.flatMap((s) => s.server?.violations ?? [])],
    close,
    [Symbol.asyncDispose]: close,
  };
}
