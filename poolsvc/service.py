"""What the control commands may ask of a running service, and the read model they show.

The command handlers (:mod:`poolsvc.commands`) are typed against :class:`Service`,
not against the supervisor: they call its public methods and render its
:class:`View`, a plain snapshot of the service built on demand (the supervisor
builds it, :mod:`poolsvc.readings`). The status views (:mod:`poolsvc.status`)
render a View and never read a private field; nothing here imports the
supervisor, so commands, status and supervisor import one way only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from poolsvc.ctlserver import Deferred
from poolsvc.faults import FaultBoard
from poolsvc.intervals import Interval
from poolsvc.report import RunInfo
from workers.stats import Snapshot


@dataclass(frozen=True, slots=True)
class SlotView:
    """One worker slot as ``poolctl workers`` shows it."""

    index: int
    state: str  # the slot's lifecycle state (poolsvc.slots)
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


class Service(Protocol):
    """What a control command may ask of the running service."""

    @property
    def seed(self) -> int: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def board(self) -> FaultBoard:
        """The faults in force: set, clear, describe."""
        ...

    @property
    def last_audit(self) -> dict[str, Any] | None: ...

    def view(self) -> View:
        """The service now (status, workers, load)."""
        ...

    def snapshot(self) -> Snapshot:
        """The run's totals now."""
        ...

    def run_info(self) -> RunInfo: ...

    def breaker_status(self) -> list[dict[str, Any]]:
        """Each target's breaker, by target index."""
        ...

    def breaker_action(self, target: int, action: str) -> None: ...

    def set_concurrency(self, total: int) -> None: ...

    def set_rate(self, total: float) -> None: ...

    def set_pool(self, targets: list[int], size: int, minimum: int | None) -> None:
        """New pool bounds in total for ``targets`` (indices)."""
        ...

    def set_paused(self, paused: bool) -> None: ...

    def scale(self, n: int) -> None: ...

    def audit_now(self) -> Deferred:
        """An FD audit of every live worker; the reply comes when it is done."""
        ...

    def drain(self) -> None: ...

    def stop(self) -> None: ...
