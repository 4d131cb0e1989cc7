/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): where the busy time goes, by function
 * (self and inclusive time) and by package or source file.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { REPO_ROOT } from "./stack.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One row of a profile summary; times in ms and in % of busy time. */
export interface FrameRow {
  frame: string;
  where: string;
  ms: number;
  pct: number;
}

/** What {@link summarizeProfile} returns. */
export interface ProfileSummary {
  /** Wall time covered by the profile, ms. */
  totalMs: number;
  /** Time not idle, ms. */
  busyMs: number;
  /** Garbage collector share of busy time, %. */
  gcPct: number;
  /** Functions by self time. */
  topSelf: FrameRow[];
  /** Functions by inclusive time (recursion counted once). */
  topInclusive: FrameRow[];
  /** Packages / ATLAS files by self time. */
  byPackage: FrameRow[];
}

/** Where a frame's code lives: a package name, an ATLAS source file, or a node internal module. */
export function locate(url: string): string {
  if (url === "") return "(native)";
  let path = url.replace(/^file:\/\//, "");
  if (path.startsWith("node:"))
    return `node:${path.slice(5).split("/")[0] === "internal" ? (path.split("/")[1] ?? "internal") : path.slice(5)}`;
  const nm = path.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = path.slice(nm + "node_modules/".length).split("/");
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? path);
  }
  if (path.startsWith(REPO_ROOT)) path = path.slice(REPO_ROOT.length);
  return path;
}

function key(cf: CallFrame): string {
  return `${cf.functionName || "(anonymous)"} ${cf.url}:${cf.lineNumber + 1}`;
}

function label(cf: CallFrame): { frame: string; where: string } {
  const where = locate(cf.url);
  const file =
    cf.url === ""
      ? ""
      : `${where.includes("/") ? where : `${where}`}${cf.url.startsWith("node:") || where.includes(".ts") ? `:${cf.lineNumber + 1}` : ""}`;
  return { frame: cf.functionName || "(anonymous)", where: file || where };
}

/** Reads and summarises a profile. */
export async function summarizeProfile(file: string, top = 15): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    const dt = (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  let total = 0;
  let idle = 0;
  let gc = 0;
  const selfByKey = new Map<string, { ms: number; cf: CallFrame }>();
  const pkg = new Map<string, number>();
  for (const [id, ms] of self) {
    const cf = byId.get(id)!.callFrame;
    total += ms;
    if (cf.functionName === "(idle)") {
      idle += ms;
      continue;
    }
    if (cf.functionName === "(garbage collector)") gc += ms;
    const k = key(cf);
    const e = selfByKey.get(k) ?? { ms: 0, cf };
    e.ms += ms;
    selfByKey.set(k, e);
    const where = cf.functionName.startsWith("(") ? cf.functionName : locate(cf.url);
    pkg.set(where, (pkg.get(where) ?? 0) + ms);
  }
  // Inclusive: each sample's time goes to every distinct function on its stack.
  const inclusive = new Map<string, { ms: number; cf: CallFrame }>();
  for (const [id, ms] of self) {
    if (byId.get(id)!.callFrame.functionName === "(idle)") continue;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      if (cf.functionName === "(root)") continue;
      const k = key(cf);
      if (seen.has(k)) continue;
      seen.add(k);
      const e = inclusive.get(k) ?? { ms: 0, cf };
      e.ms += ms;
      inclusive.set(k, e);
    }
  }
  const busy = total - idle;
  const rows = (m: Map<string, { ms: number; cf: CallFrame }>) =>
    [...m.values()]
      .sort((a, b) => b.ms - a.ms)
      .slice(0, top)
      .map((e) => ({ ...label(e.cf), ms: e.ms, pct: (100 * e.ms) / busy }));
  return {
    totalMs: total,
    busyMs: busy,
    gcPct: (100 * gc) / busy,
    topSelf: rows(selfByKey),
    topInclusive: rows(inclusive),
    byPackage: [...pkg.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([where, ms]) => ({ frame: where, where: "", ms, pct: (100 * ms) / busy })),
  };
}
