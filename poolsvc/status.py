"""What the service reports while it runs: per-second intervals and metric expositions.

:class:`Intervals` turns successive snapshots (one per second, taken by the
supervisor) into per-interval figures.  Each figure covers only its own second:
req/s, errors, and p50/p99 from the histogram *difference*.  A latency spike
therefore shows in the second it happened, instead of being averaged into the
cumulative histogram.

Prometheus text (:mod:`poolsvc.prometheus`), ``key=value`` text and JSON are all
rendered from the same snapshot, so every form carries the same figures under
the same names. With several targets, each target has its own intervals too.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers import histogram, shm
from workers.errors import ERROR_NAMES
from workers.stats import HEARTBEAT, INDEX, Snapshot

if TYPE_CHECKING:
    from poolsvc.supervisor import Supervisor


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


# The service's state as the control socket reports it ----------------------------------
def target_snapshot(svc: Supervisor, t: int) -> Snapshot:
    """Target ``t``'s own figures over every worker (retired ones included): its
    outcomes, failures by name and latency histogram. With a single target these
    are the run's own, so the whole snapshot is returned."""
    if len(svc.names) == 1:
        return svc.snapshot()
    blocks = [svc.region.target_words(h.index, t) for h in svc.handles]
    blocks.append(svc.region.retired_target_words(t))
    snap = Snapshot()
    c = snap.counters
    for b in blocks:
        copy = b.tolist()
        c["requests.ok"] += copy[shm.T_RESP_OK]
        c["requests.failed"] += copy[shm.T_RESP_FAILED]
        c["requests.unsent"] += copy[shm.T_UNSENT]
        for i, name in enumerate(ERROR_NAMES):
            c[f"errors.{name}"] += copy[shm.T_ERRORS + i]
        histogram.merge_into(snap.hist, copy[shm.T_HIST : shm.T_HIST + histogram.BUCKETS])
    c["requests.sent"] = c["requests.ok"] + c["requests.failed"]  # those that finished
    return snap


def service_status(svc: Supervisor) -> dict[str, Any]:
    """Everything ``poolctl status`` shows: service, totals, interval, targets, workers."""
    from poolsvc import report  # report imports nothing from here; avoid a cycle at import

    now = svc.clock()
    snap = svc.snapshot()
    last = svc.intervals.latest()
    totals = report.metrics(snap, svc.run_info())
    figures = per_target(svc, snap)
    targets = []
    for t, brk in enumerate(breaker_status(svc)):
        live_blocks = [svc.region.target_words(h.index, t) for h in svc.live()]
        pool = {
            name: sum(b[shm.T_POOL + i] for b in live_blocks)
            for i, name in enumerate(("active", "idle", "connecting", "waiting"))
        }
        own = svc.target_intervals[t].latest() if len(svc.names) > 1 else last
        mine = target_snapshot(svc, t) if len(svc.names) > 1 else snap
        targets.append(
            {
                "name": brk["target"],
                "breaker": brk,
                "pool": pool,
                "ok": figures[t]["ok"],
                "failed": figures[t]["failed"],
                "unsent": figures[t]["unsent"],
                "refused": figures[t]["refused"],
                "rps": round(own.rps, 1) if own else 0.0,
                "p50_ms": own.p50_us / 1000 if own else None,
                "p99_ms": own.p99_us / 1000 if own else None,
                "errors": mine.errors(),
            }
        )
    return {
        "service": {
            "pid": os.getpid(),
            "mode": "serve" if svc.forever else "run",
            "state": "stopping" if svc.stopping else "paused" if svc.paused() else "running",
            "uptime_s": round(now - svc.started_at, 3),
            "seed": svc.seed,
            "control": str(svc.control.path) if svc.control else None,
        },
        "totals": totals,
        "interval": last.as_dict() if last else None,
        "targets": targets,
        "workers": worker_status(svc),
        "load": load_status(svc),
        "injection": svc.board.describe(),
    }


def breaker_status(svc: Supervisor) -> list[dict[str, Any]]:
    return svc.desk.status(svc.clock())


def _outcomes(slot: Any) -> int:
    """Requests with an outcome in one live slot (the derived ``requests.total``)."""
    return sum(int(slot[INDEX[f"requests.{k}"]]) for k in ("ok", "failed", "unsent", "abandoned"))


def worker_status(svc: Supervisor) -> list[dict[str, Any]]:
    now_us = svc.clock() * 1e6
    out = []
    for h in svc.handles:
        slot = svc.region.slot(h.index)
        beat = slot[HEARTBEAT]
        out.append(
            {
                "index": h.index,
                "state": "RETIRED" if h.retiring and h.state == "DONE" else h.state,
                "pid": h.pids[-1] if h.pids else None,
                "restarts": len(h.exits),
                "heartbeat_age_ms": round((now_us - beat) / 1000, 1) if beat else None,
                "requests": _outcomes(slot) + h.completed,
                "rps": round(h.rps, 1),
                "concurrency": h.shard.concurrency,
                "pool_size": h.shard.pool_size,
            }
        )
    return out


def load_status(svc: Supervisor) -> dict[str, Any]:
    model = "open" if svc.total_rate else "closed"
    return {
        "model": model,
        "rate": svc.total_rate or None,
        "concurrency": svc.total_concurrency,
        "paused": svc.paused(),
        "workers": len(svc.live()),
    }


_WORKER_FIGURES = (
    "requests.total",
    "requests.sent",
    "requests.ok",
    "requests.failed",
    "requests.unsent",
    "requests.lost",
    "requests.abandoned",
    "requests.in_doubt",
    "connections.created",
)


def per_worker(svc: Supervisor) -> list[dict[str, Any]]:
    """Per-worker totals for the run report (all incarnations of each slot)."""
    rows = []
    for h in svc.handles:
        c = Snapshot.of([svc.region.slot(h.index)]).counters
        for old in h.retired:
            for k, v in old.counters.items():
                c[k] += v
        rows.append(
            {
                "index": h.index,
                "pids": h.pids,
                "restarts": len(h.exits),
                "exit_codes": h.exits,
                "pool_size": h.shard.pool_size,
                "concurrency": h.shard.concurrency,
                **{k: c[k] for k in _WORKER_FIGURES},
            }
        )
    return rows


def per_target(svc: Supervisor, snap: Snapshot | None = None) -> list[dict[str, Any]]:
    """Each target's outcome counts over every worker (retired ones included), and
    what its breaker did (``snap``: the run's snapshot, if the caller has one)."""
    out = []
    whole = (snap or svc.snapshot()).counters if len(svc.names) == 1 else None
    for t, name in enumerate(svc.names):
        blocks = [svc.region.target_words(h.index, t) for h in svc.handles]
        blocks.append(svc.region.retired_target_words(t))
        c = whole if whole is not None else target_snapshot(svc, t).counters
        breaker = svc.breakers[t]
        out.append(
            {
                "target": name,
                "ok": c["requests.ok"],
                "failed": c["requests.failed"],
                "unsent": c["requests.unsent"],
                "refused": sum(b[shm.T_REFUSED] for b in blocks),
                "local_failures": sum(b[shm.T_LOCAL] for b in blocks),
                "breaker": breaker.state,
                "breaker_trips": breaker.total_trips,
                "breaker_because": breaker.opened_because,
                "breaker_first_because": breaker.first_opened_because,
            }
        )
    return out
