"""What the control commands may ask of a running service.

The command handlers (:mod:`poolsvc.ctl.commands`) are typed against :class:`Service`,
not against the supervisor: they call its public methods and render its
:class:`~poolsvc.report.views.View`, a plain snapshot of the service built on demand
(the supervisor builds it, :mod:`poolsvc.arbiter.readings`). The status views
(:mod:`poolsvc.ctl.status`) render a View and never read a private field; nothing here imports the
supervisor, so commands, status and supervisor import one way only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from poolsvc.ctl.ctlserver import Deferred
from poolsvc.ctl.faultboard import FaultBoard
from poolsvc.report.render import RunInfo
from poolsvc.report.views import View
from workers.shared.slotstats import Snapshot


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
