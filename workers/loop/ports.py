"""The interfaces between a worker's parts: each part is typed against these, not a class.

- :class:`Lane`: what the loop and the request path call on the accelerated path (the
  C extension, built by :mod:`workers.lane.fastpath`), so the loop needs nothing of it;
- :class:`Opening`, :class:`Issuing`, :class:`Answering`, :class:`Settling`: the dialer,
  the request path, the responses and the failures (:mod:`workers.exchange`), as the
  others call them, reached through one :class:`Peers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from workers.pool.client import Client
    from workers.pool.connection import Connection
    from workers.pool.target import Target


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


class Opening(Protocol):
    """Connections opened and closed (the dialer, :class:`workers.exchange.dialer.Dialer`)."""

    def connect(self, target: Target, owner: Client | None) -> None:
        """Start a handshake; ``owner`` gets the connection, else it refills the pool."""
        ...

    def close(self, conn: Connection, reason: str, refill: bool = True) -> None:
        """Close ``conn``, counting ``reason`` as an eviction ('' = none)."""
        ...

    def refill(self, target: Target) -> None:
        """Open what the target's pool lacks of its minimum."""
        ...


class Issuing(Protocol):
    """The request path (:class:`workers.exchange.requests.Requests`)."""

    def next(self, client: Client) -> None:
        """Issue ``client``'s next request, or retire it at a bound."""
        ...

    def acquire(self, client: Client) -> None:
        """Get the ACQUIRING ``client`` a connection as its target's pool decides."""
        ...

    def dispatch(self, client: Client, conn: Connection) -> None:
        """Reserve the idle ``conn`` for ``client`` and send its request."""
        ...

    def send(self, client: Client) -> None:
        """Send ``client``'s request on its RESERVED connection."""
        ...

    def write_later(self, conn: Connection, data: bytes, n: int) -> None:
        """Only ``n`` bytes of ``data`` went out: the rest when the socket is writable."""
        ...


class Answering(Protocol):
    """Responses (:class:`workers.exchange.responses.Responses`): what the lane hands back."""

    def received(self, conn: Connection, data: bytes) -> None:
        """Bytes read from ``conn``: parse them, count a whole response."""
        ...

    def checkin_parked(self, conn: Connection) -> None:
        """An open loop's connection the lane held idle goes back to the pool."""
        ...


class Settling(Protocol):
    """Failed and refused requests (:class:`workers.exchange.failures.Failures`)."""

    def fail(self, client: Client, phase: str, name: str, injected: str, sent: bool) -> None:
        """Count a failed request and let ``client`` go on."""
        ...

    def open_failed(self, client: Client, phase: str, name: str, injected: str) -> None:
        """The connection opened for ``client``'s request failed to connect or handshake."""
        ...

    def refuse(self, client: Client) -> None:
        """The breaker refused the request."""
        ...

    def conn_failed(self, conn: Connection, phase: str, name: str) -> None:
        """A request's connection broke: close it and settle the request."""
        ...

    def read_failed(self, conn: Connection, name: str) -> None:
        """Reading ``conn`` failed: its request fails, or (idle) the peer went away."""
        ...

    def reconnect(self, client: Client) -> None:
        """Re-send on a fresh connection."""
        ...

    def target_failed(self, target: Target, client: Client) -> None:
        """The target failed a request: extend its streak (for the breaker)."""
        ...


class Peers:
    """The worker's parts as each sees the others, by interface.

    The parts call each other both ways (a fresh connection goes from the dialer to the
    request path, a failed send from the request path to the failures, a failed retry
    back to the request path), so none can be built with the others finished. Each is
    built with this one object, and the worker names each part in it as it builds it
    (:class:`workers.worker.Worker`), before the run; a part then reaches another only
    as ``self.peers.settling.fail(...)``: a reader, and the type checker, follow every
    call to its interface and from there to the one class that implements it.
    """

    __slots__ = ("answering", "issuing", "opening", "settling")

    opening: Opening
    issuing: Issuing
    answering: Answering
    settling: Settling

    def __repr__(self) -> str:
        named = [n for n in self.__slots__ if hasattr(self, n)]
        return f"<Peers {' '.join(sorted(named))}>"
