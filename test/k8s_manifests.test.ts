/**
 * The multi-host deployment files, checked offline (docs/adr/0016-multi-host-deployment.md):
 *
 * - every Kubernetes object under deploy/k8s validates against the Kubernetes JSON schemas that
 *   `kubernetes-models` ships (no cluster, no network), the Secret kustomize generates included;
 * - every variable a container sets (its `env` and its ConfigMaps) is one of
 *   libs/config/src/schema.ts, and the values parse with the real `loadConfig`;
 * - the NATS passwords: what the services, the worker pool's volume and the NATS chart's container
 *   read from the Secret are exactly the variables deploy/nats/atlas.conf references;
 * - deploy/k8s/nats-values.yaml against the keys of the NATS chart (1.x) we rely on, as a strict zod
 *   schema (the chart publishes no JSON schema installable offline), and against the services'
 *   NATS_URL and ATLAS_JS_REPLICAS;
 * - deploy/compose/nats-cluster.yml still fits docker-compose.yml (its node commands extend the
 *   base command; every service with a NATS_URL there gets the three nodes);
 * - deploy/compose/gpu-host-leaf.conf, run as a leaf node of a real nats-server with the generated
 *   users: each worker's subjects cross, another worker's do not, JetStream works through it.
 *
 * Each check is also shown to fail on a broken input, so none passes on nothing.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { configSchema, loadConfig } from "@atlas/config";
import { freePort, startNatsServer } from "@atlas/testing";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Namespace, Secret, Service } from "kubernetes-models/v1";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { z } from "zod";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const K8S = join(ROOT, "deploy/k8s");
const VALUES = join(K8S, "nats-values.yaml");
const PASSWORDS_SECRET = "atlas-nats-passwords";

type K8sObject = { apiVersion?: string; kind?: string; metadata?: { name?: string } } & Record<string, unknown>;
interface Validating {
  validate(): void;
}
/** The kinds the manifests may use, each with its schema-validating model. */
const MODELS: Record<string, new (data: never) => Validating> = {
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "v1/ConfigMap": ConfigMap,
  "v1/Namespace": Namespace,
  "v1/Secret": Secret,
  "v1/Service": Service,
};
const KUSTOMIZE_KINDS = new Set(["Kustomization", "Component"]);

/** Schema problems of one object (empty: valid). */
function schemaProblems(obj: K8sObject): string[] {
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (Model === undefined) return [`no schema for ${obj.apiVersion} ${obj.kind}: add its model to MODELS`];
  try {
    new Model(obj as never).validate();
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? yamlFiles(join(dir, e.name)) : e.name.endsWith(".yaml") ? [join(dir, e.name)] : [],
  );
}
/** Every document of every YAML file under deploy/k8s but the Helm values. */
function loadManifests(): { file: string; obj: K8sObject }[] {
  return yamlFiles(K8S)
    .filter((f) => f !== VALUES)
    .flatMap((file) =>
      parseAllDocuments(readFileSync(file, "utf8")).map((doc) => {
        if (doc.errors.length > 0) throw new Error(`${relative(ROOT, file)}: ${doc.errors[0]?.message}`);
        return { file: relative(K8S, file), obj: doc.toJS() as K8sObject };
      }),
    );
}

/** The password variables deploy/nats/atlas.conf makes nats-server read (`$ATLAS_NATS_PASSWORD_<USER>`). */
const CONF_PASSWORDS = [
  ...new Set(
    [...readFileSync(join(ROOT, "deploy/nats/atlas.conf"), "utf8").matchAll(/\$(ATLAS_NATS_PASSWORD_[A-Z0-9_]+)/g)].map(
      (m) => m[1] as string,
    ),
  ),
].sort();

const EnvVar = z.object({
  name: z.string(),
  value: z.string().optional(),
  valueFrom: z.object({ secretKeyRef: z.object({ name: z.string(), key: z.string(), optional: z.boolean().optional() }) }).optional(),
});
const Container = z.object({
  name: z.string(),
  env: z.array(EnvVar).default([]),
  envFrom: z.array(z.object({ configMapRef: z.object({ name: z.string() }) })).default([]),
});
const SecretVolume = z.object({
  name: z.string(),
  secret: z.object({ secretName: z.string(), items: z.array(z.object({ key: z.string(), path: z.string() })).default([]) }).optional(),
});
const Workload = z.object({
  kind: z.enum(["Deployment", "StatefulSet"]),
  metadata: z.object({ name: z.string() }),
  spec: z.object({
    template: z.object({ spec: z.object({ containers: z.array(Container), volumes: z.array(SecretVolume).default([]) }) }),
  }),
});
type Workload = z.infer<typeof Workload>;

/** What a workload's containers set and read: problems with names and values, and the Secret keys used. */
function envProblems(workload: Workload, configMaps: Map<string, Record<string, string>>): { problems: string[]; secretKeys: string[] } {
  const problems: string[] = [];
  const secretKeys: string[] = [];
  const known = new Set(Object.keys(configSchema.shape));
  for (const c of workload.spec.template.spec.containers) {
    const where = `${workload.metadata.name}/${c.name}`;
    const env: Record<string, string> = {};
    for (const ref of c.envFrom) {
      const data = configMaps.get(ref.configMapRef.name);
      if (data === undefined) problems.push(`${where}: ConfigMap ${ref.configMapRef.name} is not in deploy/k8s`);
      Object.assign(env, data ?? {});
    }
    for (const v of c.env) {
      const ref = v.valueFrom?.secretKeyRef;
      if (ref?.name === PASSWORDS_SECRET) secretKeys.push(ref.key);
      // A Secret's value is not in the manifests: a stand-in that every secret variable accepts.
      env[v.name] = ref !== undefined ? "stand-in-secret-1" : (v.value ?? "");
    }
    for (const name of Object.keys(env)) if (!known.has(name)) problems.push(`${where}: ${name} is not in libs/config/src/schema.ts`);
    try {
      loadConfig(env);
    } catch (err) {
      problems.push(`${where}: ${(err as Error).message}`);
    }
  }
  for (const vol of workload.spec.template.spec.volumes) {
    if (vol.secret?.secretName === PASSWORDS_SECRET) secretKeys.push(...vol.secret.items.map((i) => i.key));
  }
  return { problems, secretKeys };
}

const manifests = loadManifests();
const objects = manifests.filter((m) => !KUSTOMIZE_KINDS.has(m.obj.kind ?? ""));
const configMaps = new Map(
  objects.filter((m) => m.obj.kind === "ConfigMap").map((m) => [m.obj.metadata?.name ?? "", (m.obj.data ?? {}) as Record<string, string>]),
);
const workloads = objects.filter((m) => m.obj.kind === "Deployment" || m.obj.kind === "StatefulSet").map((m) => Workload.parse(m.obj));
const byName = (name: string) => {
  const w = workloads.find((x) => x.metadata.name === name);
  if (w === undefined) throw new Error(`no workload ${name}`);
  return w;
};

/** The Secret kustomize generates from nats-passwords.env (`npm run nats-config -- --env-file`). */
function generatedSecret(): K8sObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: PASSWORDS_SECRET },
    type: "Opaque",
    data: Object.fromEntries(CONF_PASSWORDS.map((v) => [v, Buffer.from("stand-in").toString("base64")])),
  };
}

describe("Kubernetes manifests (deploy/k8s)", () => {
  it("finds the five services and the NATS passwords it checks against", () => {
    expect(workloads.map((w) => w.metadata.name).sort()).toEqual(
      ["api", "inference-worker", "inference-worker-gpu", "metrics", "persistence", "scheduler"].sort(),
    );
    expect(CONF_PASSWORDS).toContain("ATLAS_NATS_PASSWORD_API");
    expect(CONF_PASSWORDS.filter((v) => v.includes("_WORKER_")).length).toBeGreaterThan(0);
  });

  it("validates every object against the Kubernetes schemas", () => {
    const problems = [...objects, { file: "(secretGenerator)", obj: generatedSecret() }].flatMap(({ file, obj }) =>
      schemaProblems(obj).map((p) => `${file} ${obj.kind}/${obj.metadata?.name}: ${p}`),
    );
    expect(problems).toEqual([]);
    expect(objects.length).toBeGreaterThanOrEqual(10);
  });

  it("rejects a broken object", () => {
    const api = structuredClone(objects.find((m) => m.obj.kind === "Deployment" && m.obj.metadata?.name === "api")?.obj) as K8sObject;
    const spec = api.spec as { replicas: unknown; template: { spec: { containers: Record<string, unknown>[] } } };
    spec.replicas = "two";
    delete spec.template.spec.containers[0]?.name;
    const problems = schemaProblems(api).join("\n");
    expect(problems).toContain("/spec/replicas must be integer");
    expect(problems).toContain("/spec/template/spec/containers/0 must have required property name");
    expect(schemaProblems({ apiVersion: "v1", kind: "Pod", metadata: { name: "x" } })[0]).toContain("no schema for v1 Pod");
  });

  it("lists every manifest in the kustomization or the gpu component", () => {
    const listed = new Set<string>();
    for (const m of manifests.filter((x) => KUSTOMIZE_KINDS.has(x.obj.kind ?? ""))) {
      const dir = m.file.includes("/") ? m.file.slice(0, m.file.lastIndexOf("/") + 1) : "";
      const k = z.object({ resources: z.array(z.string()) }).parse(m.obj);
      for (const r of k.resources) listed.add(`${dir}${r}`);
    }
    const files = [...new Set(objects.map((m) => m.file))].sort();
    expect(files.filter((f) => !listed.has(f))).toEqual([]);
    expect([...listed].filter((f) => !files.includes(f))).toEqual([]);
  });

  it("sets only configuration variables that exist, with values that parse", () => {
    expect(workloads.flatMap((w) => envProblems(w, configMaps).problems)).toEqual([]);
  });

  it("flags a variable that does not exist and a value that does not parse", () => {
    const api = structuredClone(byName("api"));
    api.spec.template.spec.containers[0]?.env.push({ name: "ATLAS_NOT_A_VARIABLE", value: "1" }, { name: "ATLAS_JS_REPLICAS", value: "9" });
    const problems = envProblems(api, configMaps).problems.join("\n");
    expect(problems).toContain("ATLAS_NOT_A_VARIABLE is not in libs/config/src/schema.ts");
    expect(problems).toContain("ATLAS_JS_REPLICAS: ");
    expect(envProblems(api, new Map()).problems.join("\n")).toContain("ConfigMap atlas-env is not in deploy/k8s");
  });

  it("reads from the Secret exactly the passwords deploy/nats/atlas.conf references", () => {
    const used = new Set(workloads.flatMap((w) => envProblems(w, configMaps).secretKeys));
    expect([...used].filter((k) => !CONF_PASSWORDS.includes(k))).toEqual([]);
    expect(CONF_PASSWORDS.filter((k) => !used.has(k))).toEqual([]);
    // Every worker mounts the whole pool, each password as the file `worker-<n>` (ATLAS_WORKER_CREDENTIALS).
    for (const name of ["inference-worker", "inference-worker-gpu"]) {
      const items = byName(name).spec.template.spec.volumes.flatMap((v) => v.secret?.items ?? []);
      const pool = CONF_PASSWORDS.filter((v) => v.includes("_WORKER_"));
      expect(items.map((i) => i.key).sort()).toEqual(pool);
      for (const i of items) expect(i.path).toBe(`worker-${i.key.replace("ATLAS_NATS_PASSWORD_WORKER_", "")}`);
    }
  });
});

/** The NATS chart's values (nats-io/k8s, chart `nats`, 1.x) that the deployment relies on, strictly. */
const Enabled = z.strictObject({ enabled: z.boolean() });
const SecretRef = z.strictObject({ valueFrom: z.strictObject({ secretKeyRef: z.strictObject({ name: z.string(), key: z.string() }) }) });
const NatsValues = z.strictObject({
  config: z.strictObject({
    cluster: z.strictObject({ enabled: z.literal(true), replicas: z.number().int().min(3), port: z.number().int() }),
    jetstream: z.strictObject({
      enabled: z.literal(true),
      fileStore: z.strictObject({
        enabled: z.literal(true),
        dir: z.string(),
        pvc: z.strictObject({
          enabled: z.literal(true),
          size: z.string().regex(/^\d+(Mi|Gi|Ti)$/),
          storageClassName: z.string().optional(),
        }),
      }),
      memoryStore: Enabled,
    }),
    nats: z.strictObject({ port: z.number().int() }),
    leafnodes: z.strictObject({ enabled: z.boolean(), port: z.number().int() }),
    monitor: z.strictObject({ enabled: z.boolean(), port: z.number().int() }),
    merge: z.record(z.string(), z.unknown()),
  }),
  container: z.strictObject({
    image: z.strictObject({ tag: z.string() }),
    env: z.record(z.string(), z.union([z.string(), SecretRef])),
    merge: z.record(z.string(), z.unknown()).optional(),
  }),
  podTemplate: z.strictObject({
    topologySpreadConstraints: z.record(z.string(), z.strictObject({ maxSkew: z.number().int(), whenUnsatisfiable: z.string() })),
  }),
  service: z.strictObject({
    enabled: z.boolean(),
    ports: z.strictObject({ nats: Enabled, leafnodes: Enabled, monitor: Enabled }),
  }),
  natsBox: Enabled,
});

describe("NATS Helm values (deploy/k8s/nats-values.yaml)", () => {
  const raw = parse(readFileSync(VALUES, "utf8")) as unknown;

  it("uses only chart keys it knows, and is a JetStream cluster the services' settings match", () => {
    const values = NatsValues.parse(raw);
    const env = configMaps.get("atlas-env") ?? {};
    expect(Number(env.ATLAS_JS_REPLICAS)).toBe(values.config.cluster.replicas);
    const urls = (env.NATS_URL ?? "").split(",");
    expect(urls).toEqual(
      Array.from({ length: values.config.cluster.replicas }, (_, i) => `nats://nats-${i}.nats-headless:${values.config.nats.port}`),
    );
    // atlas.conf's users, included from the chart's ConfigMap (helm --set-file), and leaf nodes using this JetStream.
    expect(values.config.merge["00$include"]).toBe("atlas.conf");
    expect(values.config.merge.default_js_domain).toEqual({ $G: "" });
  });

  it("gives nats-server every password atlas.conf references, from the Secret", () => {
    const values = NatsValues.parse(raw);
    expect(Object.keys(values.container.env).sort()).toEqual(CONF_PASSWORDS);
    for (const [name, v] of Object.entries(values.container.env)) {
      expect(v).toEqual({ valueFrom: { secretKeyRef: { name: PASSWORDS_SECRET, key: name } } });
    }
  });

  it("rejects a key the chart does not have and a cluster too small to replicate", () => {
    const typo = structuredClone(raw) as { config: { cluster: Record<string, unknown> } };
    typo.config.cluster.replica = 3;
    expect(NatsValues.safeParse(typo).success).toBe(false);
    const small = structuredClone(raw) as { config: { cluster: Record<string, unknown> } };
    small.config.cluster.replicas = 1;
    expect(NatsValues.safeParse(small).success).toBe(false);
  });
});

describe("3-node NATS compose overlay (deploy/compose/nats-cluster.yml)", () => {
  const Service = z.object({ command: z.array(z.string()).optional(), environment: z.record(z.string(), z.unknown()).optional() }).loose();
  const File = z.object({ services: z.record(z.string(), Service) });
  const base = File.parse(parse(readFileSync(join(ROOT, "docker-compose.yml"), "utf8"), { merge: true }));
  const overlay = File.parse(parse(readFileSync(join(ROOT, "deploy/compose/nats-cluster.yml"), "utf8"), { merge: true }));

  it("runs the base file's nats on three named, routed nodes, the copies like the original", () => {
    const nats = base.services.nats;
    const baseCommand = nats?.command ?? [];
    expect(baseCommand[0]).toBe("nats-server");
    const names = ["nats", "nats-2", "nats-3"];
    names.forEach((service, i) => {
      const cmd = overlay.services[service]?.command ?? [];
      expect(cmd.slice(0, baseCommand.length)).toEqual(baseCommand);
      const rest = cmd.slice(baseCommand.length);
      expect(rest.slice(0, 2)).toEqual(["-n", `n${i + 1}`]);
      expect(rest[rest.indexOf("--routes") + 1]).toBe(names.map((n) => `nats://${n}:6222`).join(","));
    });
    // What the copies must share with the base file's nats: all but their store (/data).
    const shared = (s: z.infer<typeof Service> | undefined) => ({
      image: s?.image,
      depends_on: s?.depends_on,
      volumes: ((s?.volumes ?? []) as string[]).filter((v) => !v.includes(":/data")),
      check: (s?.healthcheck as { test?: unknown } | undefined)?.test,
    });
    for (const copy of ["nats-2", "nats-3"]) expect(shared(overlay.services[copy]), copy).toEqual(shared(nats));
  });

  it("gives every service that uses NATS all three nodes and three replicas", () => {
    const users = Object.entries(base.services).filter(([, s]) => s.environment?.NATS_URL !== undefined);
    expect(users.length).toBeGreaterThanOrEqual(5);
    const known = new Set(Object.keys(configSchema.shape));
    for (const [name] of users) {
      const env = overlay.services[name]?.environment ?? {};
      expect(env, name).toMatchObject({ NATS_URL: "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222", ATLAS_JS_REPLICAS: "3" });
      expect(Object.keys(env).filter((k) => !known.has(k))).toEqual([]);
    }
  });
});

describe("a GPU host's leaf node (deploy/compose/gpu-host-leaf.conf)", () => {
  /** Publishes with `send` every 100 ms (at most 100 times: leaf connections and interest take a moment) until `received()`. */
  const until = async (send: () => void, received: () => boolean) => {
    for (let i = 0; i < 100 && !received(); i++) {
      send();
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  it("lets each worker's own subjects and JetStream cross, and nothing of another worker's", async () => {
    const leafPort = await freePort();
    const password = (v: string) => `pw-${v.toLowerCase()}`;
    for (const v of CONF_PASSWORDS) process.env[v] = password(v);
    for (const n of [5, 6])
      process.env[`ATLAS_LEAF_URL_WORKER_${n}`] =
        `nats-leaf://worker-${n}:${password(`ATLAS_NATS_PASSWORD_WORKER_${n}`)}@127.0.0.1:${leafPort}`;
    const users = readFileSync(join(ROOT, "deploy/nats/atlas.conf"), "utf8");
    await using hub = await startNatsServer({
      config: `${users}\nleafnodes { listen: "127.0.0.1:${leafPort}" }\ndefault_js_domain: { "$G": "" }\n`,
    });
    await using leaf = await startNatsServer({
      jetstream: false,
      config: readFileSync(join(ROOT, "deploy/compose/gpu-host-leaf.conf"), "utf8"),
    });
    const as = (server: { url: string }, user: string) =>
      connect({ servers: server.url, user, pass: password(`ATLAS_NATS_PASSWORD_${user.toUpperCase().replaceAll("-", "_")}`) });
    const [api, scheduler, w5, w6] = await Promise.all([as(hub, "api"), as(hub, "scheduler"), as(leaf, "worker-5"), as(leaf, "worker-6")]);
    try {
      // Towards the worker: the api's generate reaches worker-5 once its leaf connection is up.
      const generate: string[] = [];
      w5.subscribe("atlas.worker.worker-5.generate", { callback: (_e, m) => void generate.push(m.subject) });
      await until(
        () => api.publish("atlas.worker.worker-5.generate", "{}"),
        () => generate.length > 0,
      );
      expect(generate[0]).toBe("atlas.worker.worker-5.generate");
      // From the workers: worker-5's heartbeat arrives, the one it sends in worker-6's name (just
      // before, on the same connection, so it would arrive first) never does; worker-6's own
      // does, over its own leaf connection.
      const heartbeats: { subject: string; from: string }[] = [];
      scheduler.subscribe("atlas.worker.heartbeat.*", {
        callback: (_e, m) => void heartbeats.push({ subject: m.subject, from: m.string() }),
      });
      await scheduler.flush();
      const seen = (subject: string, from: string) => heartbeats.some((h) => h.subject === subject && h.from === from);
      await until(
        () => {
          w5.publish("atlas.worker.heartbeat.worker-6", "w5");
          w5.publish("atlas.worker.heartbeat.worker-5", "w5");
        },
        () => seen("atlas.worker.heartbeat.worker-5", "w5"),
      );
      await until(
        () => w6.publish("atlas.worker.heartbeat.worker-6", "w6"),
        () => seen("atlas.worker.heartbeat.worker-6", "w6"),
      );
      expect(seen("atlas.worker.heartbeat.worker-5", "w5") && seen("atlas.worker.heartbeat.worker-6", "w6")).toBe(true);
      expect(heartbeats.filter((h) => h.subject.endsWith("worker-6") && h.from === "w5")).toEqual([]);
      // JetStream through the leaf (once the cluster's interest in its API reached the leaf): the
      // claim bucket and the L3 object store.
      let jetstream = false;
      await until(
        () =>
          void w5.request("$JS.API.INFO", "", { timeout: 90 }).then(
            () => (jetstream = true),
            () => {},
          ),
        () => jetstream,
      );
      const claims = await new Kvm(w5).create("atlas_worker_claims", { history: 1 });
      await claims.put("worker-5", "claimed");
      expect((await claims.get("worker-5"))?.string()).toBe("claimed");
      const l3 = await new Objm(w5).create("atlas_kv_l3");
      await l3.putBlob({ name: "snapshot" }, new Uint8Array(300_000).fill(7));
      expect((await l3.getBlob("snapshot"))?.length).toBe(300_000);
      await expect(new Kvm(w5).create("atlas_memory")).rejects.toThrow(); // not a worker's bucket
    } finally {
      await Promise.all([api, scheduler, w5, w6].map((c) => c.close()));
    }
  });
});
