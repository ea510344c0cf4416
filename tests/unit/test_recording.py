"""The run's recording: exact rows, bounded in number, at any run length (injected clock)."""

from __future__ import annotations

import itertools
import random

from poolsvc.metrics import recording
from poolsvc.metrics.recording import CAP, FIRST_PERIOD, Recording, dense
from workers.shared import histogram
from workers.shared.slotstats import Snapshot


class Run:
    """A fake run: cumulative snapshots that grow by random requests each step."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.snap = Snapshot()

    def step(self) -> Snapshot:
        snap = Snapshot()
        snap.counters.update(self.snap.counters)
        snap.hist = list(self.snap.hist)
        snap.hist2 = list(self.snap.hist2)
        snap.timings = {k: list(v) for k, v in self.snap.timings.items()}
        for _ in range(self.rng.randint(0, 40)):
            us = self.rng.randint(80, 200_000)
            snap.hist[histogram.bucket_of(us)] += 1
            snap.counters["requests.ok"] += 1
            snap.counters["requests.sent"] += 1
            snap.counters["latency.max_us"] = max(snap.counters["latency.max_us"], us)
        if self.rng.random() < 0.2:
            snap.counters["requests.failed"] += 1
            snap.timings["failure_time"][histogram.bucket_of(5000)] += 1
            snap.counters["failure_time.sum_us"] += 5000
        self.snap = snap
        return snap


def record(seconds: float, seed: int = 1) -> tuple[Recording, Snapshot]:
    now = 100.0
    rec = Recording(now, targets=1)
    run = Run(seed)
    end = now + seconds
    while now < end:
        now += 0.005  # the supervisor's tick
        if rec.due(now):
            rec.add(now, run.step(), ["CLOSED"], [])
    rec.add(now, run.step(), ["CLOSED"], [])  # the last, shorter row
    return rec, run.snap


def test_a_short_run_gets_sub_second_rows() -> None:
    rec, _ = record(3.0)
    assert rec.period == FIRST_PERIOD
    assert len(rec.rows) >= 3.0 / FIRST_PERIOD
    assert all(r.t1 - r.t0 < 1.0 for r in rec.rows)


def test_a_long_run_stays_under_the_cap_and_its_rows_add_up_exactly() -> None:
    rec, final = record(1000.0)
    assert len(rec.rows) < CAP
    assert rec.period > FIRST_PERIOD
    assert sum(r.counts.get("requests.ok", 0) for r in rec.rows) == final.counters["requests.ok"]
    assert (
        sum(r.counts.get("requests.failed", 0) for r in rec.rows)
        == final.counters["requests.failed"]
    )
    merged = [0] * histogram.BUCKETS
    for r in rec.rows:
        for i, n in enumerate(dense(r.hists["latency"])):
            merged[i] += n
    assert merged == final.hist  # histograms merge exactly, not by averaging percentiles
    spans = [(r.t0, r.t1) for r in rec.rows]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gap, no overlap


def test_a_merged_row_has_the_percentiles_of_its_whole_span() -> None:
    rec, _ = record(200.0, seed=3)
    row = max(rec.rows, key=lambda r: r.t1 - r.t0)
    shown = row.as_dict()
    counts = dense(row.hists["latency"])
    assert shown["latency"]["p99"] == histogram.percentile(counts, 99) / 1000
    assert shown["latency.buckets"] == list(row.hists["latency"])


def test_merging_keeps_the_worst_breaker_state_and_every_fault() -> None:
    a = recording.Row(0, 1, {"requests.ok": 1}, empty(), ["CLOSED", "HALF_OPEN"], ["reset"])
    b = recording.Row(1, 2, {"requests.ok": 2}, empty(), ["OPEN", "CLOSED"], ["delay"])
    m = a.merged(b)
    assert (m.t0, m.t1, m.counts) == (0, 2, {"requests.ok": 3})
    assert m.breakers == ["OPEN", "HALF_OPEN"]
    assert m.faults == ["delay", "reset"]


def empty() -> dict[str, recording.array[int]]:
    return {k: recording.array("q") for k in recording.HISTS}


def test_sums_and_maxima_are_not_rows_counts() -> None:
    rec, _ = record(1.0)
    keys = {k for r in rec.rows for k in r.counts}
    assert "requests.ok" in keys
    assert not any(k.endswith((".max_us", ".sum_us")) for k in keys)
