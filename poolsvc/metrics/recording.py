"""The run over time, for the HTML report and the JSON result: bounded rows of exact deltas.

A :class:`Recording` takes the cumulative snapshot every ``period`` seconds and
keeps, per row, what changed: the counters that moved, the latency histograms'
new counts (sparse), and the breaker states and faults seen. Rows start at
``FIRST_PERIOD`` (sub-second, so a 3-second run still draws a curve); when there
are ``CAP`` of them, neighbours are merged pairwise and the period doubles, so a
run of any length keeps at most ``CAP`` rows (memory stays flat and the browser
draws a long run smoothly) and the rows still add up exactly to the run's totals.
Merging histograms is exact (counts add), so a merged row's percentiles are
those of its whole span, never an average of percentiles.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, compress, count
from operator import ne, sub
from typing import Any, Final

from workers.shared import histogram
from workers.shared.slotstats import COUNTERS, DERIVED, Snapshot

FIRST_PERIOD: Final = 0.2
CAP: Final = 400
#: breaker states, worst last: a merged row keeps the worst one seen
SEVERITY: Final = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}
#: the histograms a row keeps: Snapshot attribute or timing name -> row key
HISTS: Final = ("latency", "latency_uncorrected", "failure_time")
#: the counters a row keeps when they moved (a maximum or a sum counts nothing)
COUNTED: Final = tuple(n for n in (*COUNTERS, *DERIVED) if not n.endswith((".max_us", ".sum_us")))


_BLOCK: Final = 64  # buckets compared at once before any one of them is


def _sparse(new: Sequence[int], old: Sequence[int]) -> array[int]:
    """The counts ``new`` has over ``old``, as (index, count) pairs flattened.

    Speed: the supervisor does this for every row on a core a worker may share, and
    a loop over every bucket held that core for ~0.2 ms per histogram. So blocks of
    buckets are compared in C (list equality), and only the buckets of a block that
    moved are compared one by one (``map``, ``compress``): a row's counts cluster in
    a few blocks around the latencies seen."""
    if len(new) != len(old):
        raise ValueError(f"histograms of {len(new)} and {len(old)} buckets")
    moved: list[int] = []
    for lo in range(0, len(new), _BLOCK):
        a, b = new[lo : lo + _BLOCK], old[lo : lo + _BLOCK]
        if a != b:
            moved.extend(compress(count(lo), map(ne, a, b)))
    grew = map(sub, map(new.__getitem__, moved), map(old.__getitem__, moved))
    return array("q", chain.from_iterable(zip(moved, grew, strict=True)))


def _add_sparse(a: array[int], b: array[int]) -> array[int]:
    merged: dict[int, int] = {}
    for pairs in (a, b):
        for k in range(0, len(pairs), 2):
            merged[pairs[k]] = merged.get(pairs[k], 0) + pairs[k + 1]
    out = array("q")
    for i in sorted(merged):
        out.append(i)
        out.append(merged[i])
    return out


def dense(pairs: Sequence[int]) -> list[int]:
    """Flattened (index, count) pairs as a full list of bucket counts."""
    counts = [0] * histogram.BUCKETS
    for k in range(0, len(pairs), 2):
        counts[pairs[k]] += pairs[k + 1]
    return counts


@dataclass(slots=True)
class Row:
    """One span of the run: ``t0``..``t1`` in seconds since the load started."""

    t0: float
    t1: float
    counts: dict[str, int]  # counters that moved, by their report names
    hists: dict[str, array[int]]  # HISTS name -> sparse new counts
    breakers: list[str]  # per target: the worst state seen
    faults: list[str]  # fault kinds active at some sample of the span

    def merged(self, later: Row) -> Row:
        counts = dict(self.counts)
        for k, v in later.counts.items():
            counts[k] = counts.get(k, 0) + v
        hists = {k: _add_sparse(self.hists[k], later.hists[k]) for k in HISTS}
        breakers = [
            max(a, b, key=SEVERITY.__getitem__)
            for a, b in zip(self.breakers, later.breakers, strict=True)
        ]
        faults = sorted({*self.faults, *later.faults})
        return Row(self.t0, later.t1, counts, hists, breakers, faults)

    def as_dict(self) -> dict[str, Any]:
        """The row as the JSON result carries it (percentiles from its own counts)."""
        seconds = self.t1 - self.t0
        out: dict[str, Any] = {
            "t0": round(self.t0, 3),
            "t1": round(self.t1, 3),
            "counts": dict(sorted(self.counts.items())),
            "breakers": self.breakers,
            "faults": self.faults,
            "rps": round(self.counts.get("requests.sent", 0) / seconds, 1) if seconds else 0.0,
        }
        for name in HISTS:
            pairs = self.hists[name]
            if not pairs:
                continue
            counts = dense(pairs)
            out[name] = {f"p{p:g}": percentile_ms(counts, p) for p in (50, 90, 99, 99.9)}
            out[name]["max"] = percentile_ms(counts, 100)
            out[f"{name}.buckets"] = list(pairs)
        return out


def percentile_ms(counts: Sequence[int], pct: float) -> float:
    return histogram.percentile(counts, pct) / 1000


def _hists(snap: Snapshot) -> dict[str, list[int]]:
    return {
        "latency": snap.hist,
        "latency_uncorrected": snap.hist2,
        "failure_time": snap.timings["failure_time"],
    }


class Recording:
    """Rows of the run (see the module docstring). ``start``: when the load started,
    on the supervisor's clock."""

    def __init__(self, start: float, targets: int) -> None:
        self.start = start
        self.period = FIRST_PERIOD
        self.rows: list[Row] = []
        self._last = Snapshot()
        self._last_t = start
        self._next = start + self.period
        self._targets = targets

    def due(self, now: float) -> bool:
        return now >= self._next

    def add(
        self, now: float, snap: Snapshot, breakers: Sequence[str], faults: Sequence[str]
    ) -> None:
        """Record the cumulative ``snap`` taken at ``now`` (the last one of a run may
        come early: it closes the final, shorter row)."""
        prev, self._last = self._last, snap
        old_hists = _hists(prev)
        new, old = snap.counters, prev.counters
        counts = {name: new[name] - old[name] for name in COUNTED if new[name] != old[name]}
        hists = {k: _sparse(v, old_hists[k]) for k, v in _hists(snap).items()}
        t0, self._last_t = self._last_t, now
        row = Row(t0 - self.start, now - self.start, counts, hists, list(breakers), sorted(faults))
        self.rows.append(row)
        self._next = now + self.period
        if len(self.rows) >= CAP:
            self._compact()

    def _compact(self) -> None:
        """Merge neighbours pairwise and double the period (an odd last row stays)."""
        rows = self.rows
        merged = [rows[i].merged(rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
        if len(rows) % 2:
            merged.append(rows[-1])
        self.rows = merged
        self.period *= 2

    def as_list(self) -> list[dict[str, Any]]:
        return [row.as_dict() for row in self.rows]

    def __repr__(self) -> str:
        return f"<Recording rows={len(self.rows)} period={self.period:g}s>"
