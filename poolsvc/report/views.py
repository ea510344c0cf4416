"""The read model: a plain snapshot of the running service, built on demand.

The supervisor builds a :class:`View` (:mod:`poolsvc.arbiter.readings`); the control
commands, the status views (:mod:`poolsvc.ctl.status`) and the Prometheus renderer
(:mod:`poolsvc.report.prometheus`) read it and never a private field of the supervisor.
The library's client builds :class:`TargetView` rows for its hosts, so its figures go
through the same renderer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from poolsvc.metrics.intervals import Interval
from poolsvc.report.render import RunInfo
from workers.shared.slotstats import Snapshot


@dataclass(frozen=True, slots=True)
class SlotView:
    """One worker slot as ``poolctl workers`` shows it."""

    index: int
    state: str  # the slot's lifecycle state (poolsvc.arbiter.slots)
    pid: int | None
    restarts: int
    heartbeat_age_ms: float | None
    requests: int  # with an outcome, every incarnation
    rps: float
    concurrency: int
    pool_size: int


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target: its breaker, its pool over the live workers, its own figures."""

    name: str
    breaker: dict[str, Any]
    pool: dict[str, int]  # active, idle, connecting, waiting; max, min (the bounds)
    figures: dict[str, Any]  # ok, failed, unsent, refused, ... (readings.per_target)
    interval: Interval | None  # its last second
    errors: dict[str, int]
    own: Snapshot  # its own totals (one target: the run's)


@dataclass(frozen=True, slots=True)
class LoadView:
    model: str  # closed or open
    rate: float | None
    concurrency: int
    paused: bool
    workers: int  # running


@dataclass(frozen=True, slots=True)
class View:
    """The service as one read: everything ``poolctl status`` shows."""

    pid: int
    mode: str  # serve or run
    state: str  # running, paused or stopping
    uptime_s: float
    seed: int
    control: str | None
    metrics: str | None  # the Prometheus endpoint's URL (None: none)
    snapshot: Snapshot
    info: RunInfo
    interval: Interval | None  # the last second, all targets
    targets: list[TargetView]
    workers: list[SlotView]
    load: LoadView
    injection: list[dict[str, Any]] = field(default_factory=list)
