"""The status views: what ``poolctl status``, ``workers`` and ``load`` show.

Each renders the service's read model (:class:`poolsvc.report.views.View`), never the
supervisor itself: the same figures under the same names as the report
(:mod:`poolsvc.report.render`) and the Prometheus text (:mod:`poolsvc.report.prometheus`),
all made from the same snapshot.
"""

from __future__ import annotations

from typing import Any

from poolsvc.report import render as report
from poolsvc.report.views import LoadView, SlotView, TargetView, View


def service_status(view: View) -> dict[str, Any]:
    """Everything ``poolctl status`` shows: service, totals, interval, targets, workers."""
    return {
        "service": {
            "pid": view.pid,
            "mode": view.mode,
            "state": view.state,
            "uptime_s": view.uptime_s,
            "seed": view.seed,
            "control": view.control,
            "metrics": view.metrics,
        },
        "totals": report.metrics(view.snapshot, view.info),
        "interval": view.interval.as_dict() if view.interval else None,
        "targets": [target_status(t) for t in view.targets],
        "workers": worker_status(view.workers),
        "load": load_status(view.load),
        "injection": view.injection,
    }


def target_status(t: TargetView) -> dict[str, Any]:
    last = t.interval
    return {
        "name": t.name,
        "breaker": t.breaker,
        "pool": t.pool,
        "ok": t.figures["ok"],
        "failed": t.figures["failed"],
        "unsent": t.figures["unsent"],
        "refused": t.figures["refused"],
        "rps": round(last.rps, 1) if last else 0.0,
        "p50_ms": last.p50_us / 1000 if last else None,
        "p99_ms": last.p99_us / 1000 if last else None,
        "errors": t.errors,
    }


def worker_status(workers: list[SlotView]) -> list[dict[str, Any]]:
    return [
        {
            "index": w.index,
            "state": w.state,
            "pid": w.pid,
            "restarts": w.restarts,
            "heartbeat_age_ms": w.heartbeat_age_ms,
            "requests": w.requests,
            "rps": w.rps,
            "concurrency": w.concurrency,
            "pool_size": w.pool_size,
        }
        for w in workers
    ]


def load_status(load: LoadView) -> dict[str, Any]:
    return {
        "model": load.model,
        "rate": load.rate,
        "concurrency": load.concurrency,
        "paused": load.paused,
        "workers": load.workers,
    }
