import { MetricsHistoryReply, type MetricsSnapshot } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { MetricsAggregator } from "./aggregator.ts";
import { type HistoryAnswer, SnapshotHistory } from "./history.ts";

// Real snapshots, all alike but for `seq` (a still clock, no events).
const aggregator = new MetricsAggregator({ instance: "m-1", intervalMs: 1000, now: () => 0 });
const snap = (seq: number): MetricsSnapshot => aggregator.snapshot(seq);

const seqs = (a: HistoryAnswer) => (a.kind === "ok" ? a.snapshots.map((s) => s.seq) : a.kind);

function filled(last: number, options: ConstructorParameters<typeof SnapshotHistory>[0]): SnapshotHistory {
  const h = new SnapshotHistory(options);
  for (let s = 1; s <= last; s++) h.push(snap(s));
  return h;
}

describe("SnapshotHistory (the metrics service's ring)", () => {
  it("answers the snapshots after any kept position, contiguous, and a reset once they were evicted", () => {
    const h = filled(8, { capacity: 5 }); // keeps 4..8
    expect([h.oldest, h.latest, h.size]).toEqual([4, 8, 5]);
    expect(h.get({ after: 3, limit: 300 })).toEqual({
      kind: "ok",
      oldest: 4,
      latest: 8,
      snapshots: [4, 5, 6, 7, 8].map(snap),
      more: false,
    });
    expect(seqs(h.get({ after: 6, limit: 300 }))).toEqual([7, 8]);
    expect(h.get({ after: 8, limit: 300 })).toEqual({ kind: "ok", oldest: 4, latest: 8, snapshots: [], more: false });
    // 3 is the last one before the ring: after 2, snapshot 3 is gone.
    expect(h.get({ after: 2, limit: 300 })).toEqual({ kind: "reset", reason: "gone", oldest: 4, latest: 8 });
    // Ahead of the series (an id of an earlier, longer-running instance).
    expect(h.get({ after: 9, limit: 300 })).toEqual({ kind: "reset", reason: "gone", oldest: 4, latest: 8 });
  });

  it("pages by limit with `more`, and answers a new start (after: null) with the newest", () => {
    const h = filled(8, { capacity: 5 });
    expect(h.get({ after: 3, limit: 2 })).toMatchObject({ kind: "ok", snapshots: [snap(4), snap(5)], more: true });
    expect(h.get({ after: 5, limit: 2 })).toMatchObject({ snapshots: [snap(6), snap(7)], more: true });
    expect(h.get({ after: 7, limit: 2 })).toMatchObject({ snapshots: [snap(8)], more: false });
    expect(seqs(h.get({ after: null, limit: 3 }))).toEqual([6, 7, 8]);
    expect(seqs(h.get({ after: null, limit: 1 }))).toEqual([8]);
    expect(h.get({ after: null, limit: 300 })).toMatchObject({ snapshots: [4, 5, 6, 7, 8].map(snap), more: false });
  });

  it("keeps a reply under its byte budget, but always moves on by at least one", () => {
    const bytes = Buffer.byteLength(JSON.stringify(snap(4)));
    const two = filled(8, { capacity: 5, maxBytes: 2 * bytes + 1 });
    expect(two.get({ after: 3, limit: 300 })).toMatchObject({ snapshots: [snap(4), snap(5)], more: true });
    expect(seqs(two.get({ after: 7, limit: 300 }))).toEqual([8]);
    const tiny = filled(8, { capacity: 5, maxBytes: 1 });
    expect(tiny.get({ after: 3, limit: 300 })).toMatchObject({ snapshots: [snap(4)], more: true });
    expect(tiny.get({ after: null, limit: 3 })).toMatchObject({ snapshots: [snap(6)], more: true });
  });

  it("knows its series from 1 before the first snapshot, and refuses a snapshot that does not follow", () => {
    const h = new SnapshotHistory();
    expect(h.get({ after: 0, limit: 300 })).toEqual({ kind: "ok", oldest: null, latest: null, snapshots: [], more: false });
    expect(h.get({ after: null, limit: 10 })).toEqual({ kind: "ok", oldest: null, latest: null, snapshots: [], more: false });
    expect(h.get({ after: 5, limit: 10 })).toEqual({ kind: "reset", reason: "gone", oldest: null, latest: null });
    expect(() => h.push(snap(2))).toThrow(/does not follow/);
    h.push(snap(1));
    expect(() => h.push(snap(1))).toThrow(/does not follow/);
    expect(seqs(h.get({ after: 0, limit: 10 }))).toEqual([1]);
  });

  it("answers what the contract accepts", () => {
    const h = filled(3, {});
    for (const a of [h.get({ after: 0, limit: 300 }), h.get({ after: 99, limit: 1 })]) {
      expect(MetricsHistoryReply.safeParse({ instance: "m-1", ...a }).success).toBe(true);
    }
  });
});
