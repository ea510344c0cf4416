"""Per-second figures: each interval covers only its own second.

:class:`Intervals` turns successive cumulative snapshots (one per second, taken by
the supervisor) into per-interval figures: req/s, outcomes, and p50/p99 from the
histogram *difference*. A latency spike therefore shows in the second it
happened, instead of being averaged into the cumulative histogram. The progress
line, the timeline file and ``poolctl status`` all show these.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from workers.shared import histogram
from workers.shared.slotstats import Snapshot


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval's figures (``t``: seconds since the service started, at its end).

    Each count is the difference of two cumulative snapshots, so the intervals of a
    run add up exactly to its totals; ``max_us`` never exceeds the run's max."""

    t: float
    seconds: float
    sent: int
    ok: int
    failed: int
    unsent: int
    lost: int
    abandoned: int
    p50_us: int
    p99_us: int
    max_us: int

    @property
    def rps(self) -> float:
        """Requests that reached the target, per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "unsent": self.unsent,
            "lost": self.lost,
            "abandoned": self.abandoned,
            "p50_ms": self.p50_us / 1000,
            "p99_ms": self.p99_us / 1000,
            "max_ms": self.max_us / 1000,
        }


_COUNTED = ("sent", "ok", "failed", "unsent", "lost", "abandoned")


class Intervals:
    """Per-interval figures from successive cumulative snapshots (bounded history)."""

    def __init__(self, start: float, keep: int = 3600) -> None:
        self.start = start
        self.history: deque[Interval] = deque(maxlen=keep)
        self._last_t = start
        self._last = Snapshot()  # zeros: the first interval covers the first second

    def add(self, now: float, snap: Snapshot, last: bool = False) -> Interval | None:
        """Record the cumulative ``snap`` taken at ``now``; returns the new interval.

        A sliver under 50 ms is folded into the next interval, except the ``last``
        one of a run, which is always recorded so that the intervals add up."""
        if now - self._last_t < 0.05 and not last:
            return None
        prev, self._last = self._last, snap
        last_t, self._last_t = self._last_t, now
        c, p = snap.counters, prev.counters
        diff = [a - b for a, b in zip(snap.hist, prev.hist, strict=True)]
        top = max((i for i, n in enumerate(diff) if n > 0), default=-1)
        run_max = c["latency.max_us"]
        max_us = min(histogram.bucket_high(top), run_max or 2**63) if top >= 0 else 0
        counts = {k: c[f"requests.{k}"] - p[f"requests.{k}"] for k in _COUNTED}
        interval = Interval(
            t=now - self.start,
            seconds=now - last_t,
            **counts,
            p50_us=histogram.percentile(diff, 50, max_us),
            p99_us=histogram.percentile(diff, 99, max_us),
            max_us=max_us,
        )
        self.history.append(interval)
        return interval

    def latest(self) -> Interval | None:
        return self.history[-1] if self.history else None
