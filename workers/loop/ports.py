"""What the loop calls on the accelerated path: the :class:`Lane` interface.

The C extension (:mod:`workers.lane.fastpath` builds it) implements it; the loop and the
request path are typed against this Protocol, so the loop's package needs nothing of the
lane's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from workers.pool.client import Client
    from workers.pool.connection import Connection


class Lane(Protocol):
    """What the loop and the request path call on the C extension's ``Lane``."""

    handled: int
    spin: float  # seconds of busy polling before a blocking wait (0: none)
    waited: float  # seconds spent waiting for events (epoll_wait, the spin)
    parked: int  # open loop: members idle in the lane until a request falls due

    def poll(self, timeout: float) -> list[tuple[int, int]]: ...
    def admit(self, clients: Sequence[Client]) -> int: ...
    def unpark(self) -> None: ...
    def take(self) -> list[tuple[Connection, str, Any]]: ...
    def members(self) -> int: ...
    def close(self) -> None: ...
