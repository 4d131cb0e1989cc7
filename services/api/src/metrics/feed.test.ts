import type { MetricsSnapshot } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { SnapshotFeed } from "./feed.ts";

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

describe("SnapshotFeed", () => {
  it("resumes after any kept snapshot, and says reset once the asked-for ones were evicted", () => {
    const feed = new SnapshotFeed({ capacity: 5 });
    for (let s = 1; s <= 8; s++) feed.push(snap(s)); // keeps 4..8
    expect(feed.oldest?.seq).toBe(4);
    expect(feed.resume(3)).toMatchObject({ kind: "ok" });
    expect((feed.resume(3) as { snapshots: MetricsSnapshot[] }).snapshots.map((s) => s.seq)).toEqual([4, 5, 6, 7, 8]);
    expect((feed.resume(6) as { snapshots: MetricsSnapshot[] }).snapshots.map((s) => s.seq)).toEqual([7, 8]);
    expect(feed.resume(8)).toEqual({ kind: "ok", snapshots: [] });
    // 3 is the last one before the ring; 2 means 3 was missed and is gone.
    expect(feed.resume(2)).toEqual({ kind: "reset", reason: "gone", oldest: 4, latest: 8 });
    expect(feed.resume(9)).toMatchObject({ kind: "reset", reason: "gone" });
    expect(feed.recent(2).map((s) => s.seq)).toEqual([7, 8]);
  });

  it("empties the ring and moves to a new epoch when the series breaks", () => {
    const feed = new SnapshotFeed({ capacity: 10 });
    let changes = 0;
    feed.onChange(() => changes++);
    feed.push(snap(1));
    feed.push(snap(2));
    feed.push(snap(2)); // a duplicate is ignored
    expect(feed.epoch).toBe(0);
    feed.push(snap(4)); // 3 went missing on the bus
    expect(feed.epoch).toBe(1);
    expect(feed.resume(2)).toMatchObject({ kind: "reset" });
    feed.push(snap(1, "m-2")); // the metrics service restarted
    expect(feed.epoch).toBe(2);
    expect(feed.oldest?.instance).toBe("m-2");
    expect(changes).toBe(4);
  });

  it("knows nothing before the first snapshot", () => {
    let now = 0;
    const feed = new SnapshotFeed({ now: () => now });
    expect(feed.resume(5)).toEqual({ kind: "reset", reason: "unknown", oldest: null, latest: null });
    expect(feed.ageMs).toBe(Number.POSITIVE_INFINITY);
    feed.push(snap(1));
    now = 250;
    expect(feed.ageMs).toBe(250);
  });
});
