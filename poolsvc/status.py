"""What the service reports while it runs: per-second intervals and metric expositions.

:class:`Intervals` turns successive snapshots (one per second, taken by the
supervisor) into per-interval figures.  Each figure covers only its own second:
req/s, errors, and p50/p99 from the histogram *difference*.  A latency spike
therefore shows in the second it happened, instead of being averaged into the
cumulative histogram.

:func:`prometheus` renders a snapshot in the Prometheus text exposition format;
``key=value`` text and JSON reuse :func:`poolsvc.report.metrics`, so every form
carries the same figures under the same names.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from poolsvc import shm
from workers import histogram
from workers.stats import EVICT_REASONS, INDEX, STATUS_CLASSES, Snapshot

if TYPE_CHECKING:
    from poolsvc.supervisor import Supervisor


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval's figures (``t``: seconds since the service started, at its end)."""

    t: float
    seconds: float
    requests: int
    ok: int
    failed: int
    p50_us: int
    p99_us: int
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "rps": round(self.rps, 1),
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.failed,
            "p50_ms": self.p50_us / 1000,
            "p99_ms": self.p99_us / 1000,
            "max_ms": self.max_us / 1000,
        }


class Intervals:
    """Per-interval figures from successive cumulative snapshots (bounded history)."""

    def __init__(self, start: float, keep: int = 3600) -> None:
        self.start = start
        self.history: deque[Interval] = deque(maxlen=keep)
        self._last_t = start
        self._last = Snapshot()  # zeros: the first interval covers the first second

    def add(self, now: float, snap: Snapshot) -> Interval | None:
        """Record the cumulative ``snap`` taken at ``now``; returns the new interval."""
        last, self._last = self._last, snap
        last_t, self._last_t = self._last_t, now
        if now - last_t < 0.05:
            return None  # nothing worth a record (e.g. the final one right after a tick)
        c, p = snap.counters, last.counters
        diff = [a - b for a, b in zip(snap.hist, last.hist, strict=True)]
        top = max((i for i, n in enumerate(diff) if n > 0), default=-1)
        max_us = histogram.bucket_high(top) if top >= 0 else 0
        interval = Interval(
            t=now - self.start,
            seconds=now - last_t,
            requests=c["requests.total"] - p["requests.total"],
            ok=c["requests.ok"] - p["requests.ok"],
            failed=c["requests.failed"] - p["requests.failed"],
            p50_us=histogram.percentile(diff, 50, max_us),
            p99_us=histogram.percentile(diff, 99, max_us),
            max_us=max_us,
        )
        self.history.append(interval)
        return interval

    def latest(self) -> Interval | None:
        return self.history[-1] if self.history else None


def _line(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


# Histogram boundaries for the exposition, in seconds (our buckets are finer; these
# are cumulative counts at each boundary, exact up to the 1/64 bucket precision).
_LE = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def prometheus(snap: Snapshot, breakers: list[dict[str, Any]]) -> str:
    """The Prometheus text exposition of ``snap`` and the breaker states."""
    c, g = snap.counters, snap.gauges
    out: list[str] = []
    _line(out, "poolsvc_requests_total", "counter", "Finished requests by result.")
    for result in ("ok", "failed"):
        out.append(f'poolsvc_requests_total{{result="{result}"}} {c[f"requests.{result}"]}')
    _line(out, "poolsvc_responses_total", "counter", "Responses by HTTP status class.")
    for cls in STATUS_CLASSES:
        out.append(f'poolsvc_responses_total{{class="{cls}"}} {c[f"responses.{cls}"]}')
    _line(out, "poolsvc_errors_total", "counter", "Failures by error class and phase.")
    for name, value in snap.errors().items():
        out.append(f'poolsvc_errors_total{{error="{name}"}} {value}')
    _line(out, "poolsvc_connections_created_total", "counter", "Handshakes completed.")
    out.append(f"poolsvc_connections_created_total {c['connections.created']}")
    _line(out, "poolsvc_connections_reused_total", "counter", "Requests on a reused connection.")
    out.append(f"poolsvc_connections_reused_total {c['connections.reused']}")
    _line(out, "poolsvc_connections_evicted_total", "counter", "Connections evicted, by reason.")
    for reason in EVICT_REASONS:
        out.append(
            f'poolsvc_connections_evicted_total{{reason="{reason}"}} '
            f"{c[f'connections.evicted.{reason}']}"
        )
    _line(
        out, "poolsvc_stale_reuse_total", "counter", "Requests re-sent once after a stale socket."
    )
    out.append(f"poolsvc_stale_reuse_total {c['retries.stale_reuse']}")
    _line(out, "poolsvc_pool_connections", "gauge", "Pool connections by state.")
    for state in ("active", "idle", "connecting"):
        out.append(f'poolsvc_pool_connections{{state="{state}"}} {g[f"connections.{state}"]}')
    _line(out, "poolsvc_pool_waiting", "gauge", "Requests waiting for a connection.")
    out.append(f"poolsvc_pool_waiting {g['pool.waiting']}")
    _line(out, "poolsvc_breaker_state", "gauge", "Breaker state: 0 closed, 1 open, 2 half-open.")
    codes = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2}
    for b in breakers:
        out.append(f'poolsvc_breaker_state{{target="{b["target"]}"}} {codes[b["state"]]}')
    _latency(out, snap)
    return "\n".join(out) + "\n"


def _latency(out: list[str], snap: Snapshot) -> None:
    name = "poolsvc_request_duration_seconds"
    _line(out, name, "histogram", "Latency of successful requests.")
    counts = snap.hist
    cumulative = 0
    i = 0
    for le in _LE:
        limit_us = int(le * 1_000_000)
        while i < len(counts) and histogram.bucket_high(i) <= limit_us:
            cumulative += counts[i]
            i += 1
        out.append(f'{name}_bucket{{le="{le:g}"}} {cumulative}')
    out.append(f'{name}_bucket{{le="+Inf"}} {sum(counts)}')
    out.append(f"{name}_sum {snap.counters['latency.sum_us'] / 1e6:.6f}")
    out.append(f"{name}_count {sum(counts)}")


# The service's state as the control socket reports it ----------------------------------
def service_status(svc: Supervisor) -> dict[str, Any]:
    """Everything ``poolctl status`` shows: service, totals, interval, targets, workers."""
    from poolsvc import report  # report imports nothing from here; avoid a cycle at import

    now = svc.clock()
    snap = svc.snapshot()
    last = svc.intervals.latest()
    totals = report.metrics(snap, svc.run_info())
    targets = []
    for t, brk in enumerate(breaker_status(svc)):
        blocks = [svc.region.target_words(h.index, t) for h in svc.handles]
        blocks.append(svc.region.retired_target_words(t))
        live_blocks = [svc.region.target_words(h.index, t) for h in svc.live()]
        pool = {
            name: sum(b[shm.T_POOL + i] for b in live_blocks)
            for i, name in enumerate(("active", "idle", "connecting", "waiting"))
        }
        targets.append(
            {
                "name": brk["target"],
                "breaker": brk,
                "pool": pool,
                "ok": sum(b[shm.T_OK] for b in blocks),
                "failed": sum(b[shm.T_FAILED] for b in blocks),
                "refused": sum(b[shm.T_REFUSED] for b in blocks),
                "rps": round(last.rps, 1) if last else 0.0,
                "p50_ms": last.p50_us / 1000 if last else None,
                "p99_ms": last.p99_us / 1000 if last else None,
                "errors": snap.errors(),
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


def worker_status(svc: Supervisor) -> list[dict[str, Any]]:
    now_us = svc.clock() * 1e6
    out = []
    for h in svc.handles:
        slot = svc.region.slot(h.index)
        beat = slot[2]
        out.append(
            {
                "index": h.index,
                "state": "RETIRED" if h.retiring and h.state == "DONE" else h.state,
                "pid": h.pids[-1] if h.pids else None,
                "restarts": len(h.exits),
                "heartbeat_age_ms": round((now_us - beat) / 1000, 1) if beat else None,
                "requests": slot[INDEX["requests.total"]] + h.completed,
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
                **{
                    k: c[k]
                    for k in (
                        "requests.total",
                        "requests.ok",
                        "requests.failed",
                        "connections.created",
                    )
                },
            }
        )
    return rows


def per_target(svc: Supervisor) -> list[dict[str, Any]]:
    """Each target's outcome counts, over every worker (retired ones included)."""
    out = []
    for t, name in enumerate(svc.names):
        blocks = [svc.region.target_words(h.index, t) for h in svc.handles]
        blocks.append(svc.region.retired_target_words(t))
        out.append(
            {
                "target": name,
                "ok": sum(b[shm.T_OK] for b in blocks),
                "failed": sum(b[shm.T_FAILED] for b in blocks),
                "refused": sum(b[shm.T_REFUSED] for b in blocks),
                "local_failures": sum(b[shm.T_LOCAL] for b in blocks),
                "breaker": svc.breakers[t].state,
                "breaker_trips": svc.breakers[t].total_trips,
            }
        )
    return out
