"""Load shape: closed-loop clients and the bounds of a run.

A closed loop is ``concurrency`` clients, each with at most one request in
flight: a client sends, waits for the response (or the failure), records it and
sends the next.  The worker loop drives clients; this module holds their state
and the bounds, without I/O.

Client states:

    READY     between requests (or not started)
    ACQUIRING looking for a connection (transient, inside one loop step)
    WAITING   queued in the pool for a connection (deadline = pool wait timeout)
    BACKOFF   connects are paused; retry checkout at the deadline
    SENDING   its request is being sent or answered on ``conn``
    PAUSED    its last request was refused by the breaker, or the load is paused
    DELAYED   the delay fault holds its request (on a RESERVED connection) before sending
    DONE      the run's bounds were reached; it sends no more
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

READY: Final = "READY"
ACQUIRING: Final = "ACQUIRING"
WAITING: Final = "WAITING"
BACKOFF: Final = "BACKOFF"
SENDING: Final = "SENDING"
PAUSED: Final = "PAUSED"
DELAYED: Final = "DELAYED"
DONE: Final = "DONE"


class Client:
    """One closed-loop request issuer."""

    __slots__ = (
        "conn",
        "deadline",
        "heap_when",
        "ident",
        "retire",
        "retried",
        "start",
        "state",
        "target",
        "trial",
    )

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.state = READY
        self.conn: Any = None  # the Connection serving the current request
        self.target = 0
        self.start = 0.0  # when the current request was issued (monotonic seconds)
        self.retried = False  # the current request was already re-sent once
        self.trial = 0  # > 0: the current request is a breaker trial of this generation
        self.retire = False  # concurrency was lowered: stop after the current request
        self.deadline = self.heap_when = 0.0

    def __repr__(self) -> str:
        return f"<Client {self.ident} {self.state}>"


@dataclass(frozen=True, slots=True)
class Bounds:
    """When a run stops issuing requests: whichever bound is reached first.

    ``requests`` 0 = no count bound; ``duration`` 0 = no time bound.  At least one
    must be set, so that a run stops by itself -- except for a service
    (``forever``), which runs until it is told to stop.
    """

    concurrency: int
    requests: int = 0
    duration: float = 0.0
    forever: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.requests < 0 or self.duration < 0:
            raise ValueError("requests and duration must not be negative")
        if not self.requests and not self.duration and not self.forever:
            raise ValueError("a run needs a bound: requests or duration")
