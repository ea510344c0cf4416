"""A client: one issuer of requests, one request in flight at most, and its lifecycle table.

Closed loop, a worker runs ``concurrency`` clients, each sending its next request
when the last one ends; open loop, a client carries one scheduled request and is
then reused. Every state is named, the transient one included, and every legal
move is a cell of :data:`TRANSITIONS` (``tests/unit/test_client_states.py`` walks
every cell; docs/architecture.md shows the table and a test checks it):

    READY      between requests (or not started)
    ACQUIRING  asking the pool for a connection (transient: inside one loop step)
    WAITING    queued in the pool for a connection (deadline: the pool wait timeout)
    BACKOFF    connects are paused; it asks the pool again at the deadline
    CONNECTING a connection is being opened for it
    SENDING    its request is on a connection: being checked, written or answered
    DELAYED    the delay fault holds its request (on a RESERVED connection)
    PAUSED     refused by an open breaker, or the load is paused or ramping up
    DONE       it sends no more (a bound, a drain, or concurrency lowered)

In flight (issued, not yet ended) are the states of :data:`IN_FLIGHT`. A request
ends in ``done`` (a response), ``fail``, ``cancel`` (the drain: never sent) or
``abandon`` (the drain deadline: sent, unanswered).
"""

from __future__ import annotations

from typing import Any, Final

from workers.shared import statetable as table

READY: Final = "READY"
ACQUIRING: Final = "ACQUIRING"
WAITING: Final = "WAITING"
BACKOFF: Final = "BACKOFF"
CONNECTING: Final = "CONNECTING"
SENDING: Final = "SENDING"
DELAYED: Final = "DELAYED"
PAUSED: Final = "PAUSED"
DONE: Final = "DONE"
STATES: Final = (READY, ACQUIRING, WAITING, BACKOFF, CONNECTING, SENDING, DELAYED, PAUSED, DONE)
IN_FLIGHT: Final = frozenset({ACQUIRING, WAITING, BACKOFF, CONNECTING, SENDING, DELAYED})

# fmt: off
TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    READY:      {"issue": ACQUIRING, "park": PAUSED, "retire": DONE},
    ACQUIRING:  {"attach": SENDING, "connect": CONNECTING, "wait": WAITING,
                 "backoff": BACKOFF, "fail": READY, "park": PAUSED},
    WAITING:    {"attach": SENDING, "connect": CONNECTING, "fail": READY, "cancel": DONE},
    BACKOFF:    {"retry": ACQUIRING, "cancel": DONE},
    CONNECTING: {"attach": SENDING, "fail": READY, "cancel": DONE},
    SENDING:    {"delay": DELAYED, "done": READY, "fail": READY, "connect": CONNECTING,
                 "retry": ACQUIRING, "cancel": DONE, "abandon": DONE},
    DELAYED:    {"send": SENDING, "retry": ACQUIRING, "cancel": DONE},
    PAUSED:     {"wake": READY, "retire": DONE},
    DONE:       {},
}
# fmt: on

#: The table by event, for the request path: ``client.state = ON["send"][client.state]``.
ON: Final = table.columns(TRANSITIONS)


class Client:
    """One issuer of requests (see the module docstring). ``state`` changes only by
    :meth:`fire` or a move of :data:`ON`."""

    __slots__ = (
        "conn",
        "deadline",
        "heap_when",
        "ident",
        "retire",
        "retried",
        "sent_at",
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
        self.start = 0.0  # when the current request was due: issued, or intended (open loop)
        self.sent_at = 0.0  # when it was actually written to a connection
        self.retried = False  # the current request was already re-sent once
        self.trial = 0  # > 0: the current request is a breaker trial of this generation
        self.retire = False  # concurrency was lowered: stop after the current request
        self.deadline = self.heap_when = 0.0

    def fire(self, event: str) -> str:
        """Apply ``event`` to the table; returns the new state."""
        self.state = new = table.fire(TRANSITIONS, self.state, event, self)
        return new

    def __repr__(self) -> str:
        return f"<Client {self.ident} {self.state} target={self.target} trial={self.trial}>"
