import type { MetricsSnapshot } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { type CacheRead, SnapshotFeed } from "./feed.ts";

function snap(seq: number, instance = "m-1"): MetricsSnapshot {
  return {
    seq,
    instance,
    ts: seq * 1000,
    interval_ms: 1000,
    started_at: 0,
    windows: {},
    workers: {},
    totals: {
      requests: {},
      errors: {},
      over_budget: 0,
      cache: { l1: 0, l2: 0, l3: 0, miss: 0, none: 0 },
      tokens: { prompt: 0, completion: 0, cached: 0 },
      latency_s: {},
      workers: {},
      services: {},
    },
  };
}

const seqs = (r: CacheRead) => (r.kind === "ok" ? r.snapshots.map((s) => s.seq) : r.kind);

describe("SnapshotFeed (the api's relay cache)", () => {
  it("serves what follows a position it holds, and misses once that was evicted", () => {
    const feed = new SnapshotFeed({ capacity: 5 });
    for (let s = 1; s <= 8; s++) feed.push(snap(s)); // keeps 4..8
    expect(feed.oldest?.seq).toBe(4);
    expect(seqs(feed.after("m-1", 3))).toEqual([4, 5, 6, 7, 8]);
    expect(seqs(feed.after("m-1", 6))).toEqual([7, 8]);
    expect(seqs(feed.after("m-1", 8))).toEqual([]);
    // 3 is the last one before the ring; after 2, 3 is missing here: ask the metrics service.
    expect(seqs(feed.after("m-1", 2))).toBe("miss");
    // Ahead of the newest: the cache is behind its reader, who waits for the next one.
    expect(seqs(feed.after("m-1", 9))).toEqual([]);
    // Another series: the cache cannot say how the two relate.
    expect(seqs(feed.after("m-0", 5))).toBe("miss");
  });

  it("starts again when the series breaks (a lost snapshot, a restarted metrics service), ignoring duplicates", () => {
    const feed = new SnapshotFeed({ capacity: 10 });
    let changes = 0;
    feed.onChange(() => changes++);
    feed.push(snap(1));
    feed.push(snap(2));
    feed.push(snap(2)); // a duplicate is ignored
    expect(seqs(feed.after("m-1", 0))).toEqual([1, 2]);
    feed.push(snap(4)); // 3 went missing on the bus
    expect(feed.oldest?.seq).toBe(4);
    expect(seqs(feed.after("m-1", 2))).toBe("miss");
    expect(seqs(feed.after("m-1", 3))).toEqual([4]);
    feed.push(snap(1, "m-2")); // the metrics service restarted
    expect(feed.oldest?.instance).toBe("m-2");
    expect(seqs(feed.after("m-1", 4))).toBe("miss");
    expect(seqs(feed.after("m-2", 0))).toEqual([1]);
    expect(changes).toBe(4);
  });

  it("knows nothing before the first snapshot", () => {
    let now = 0;
    const feed = new SnapshotFeed({ now: () => now });
    expect(feed.after("m-1", 0)).toEqual({ kind: "miss" });
    expect(feed.ageMs).toBe(Number.POSITIVE_INFINITY);
    feed.push(snap(1));
    now = 250;
    expect(feed.ageMs).toBe(250);
  });
});
