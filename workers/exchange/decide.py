"""The worker's decisions: pure functions of plain facts, returning typed actions.

Nothing here touches a socket, a clock or shared memory; the worker gathers the
facts, asks, and performs the action. ``tests/unit/test_decide.py`` drives every
branch without a socket.

- :func:`after_response`: a response is complete: keep the connection for the
  same client's next request (:data:`RENEW`), check it in, or close it.
- :func:`after_failure`: a request's connection broke: re-send once on a fresh
  connection when that is provably safe, check again, or fail the request.
- :func:`on_refusal`: the breaker refused a request: park the client, or let it
  go on at once.
- :func:`at_drain_deadline`: a request still out when the drain time is up is
  abandoned (the target has it whole) or cancelled (it never reached the target).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Next(enum.Enum):
    """What becomes of a connection after a complete response."""

    RENEW = "renew"  # the same client sends its next request on it (if the pool agrees)
    CHECK_IN = "check_in"  # back to the pool (idle, handed to a waiter, or closed by it)
    CLOSE = "close"  # closed: it was draining, or the response said it must not be reused


# Module-level names: the request path compares with ``is`` and a global load.
RENEW: Final = Next.RENEW
CHECK_IN: Final = Next.CHECK_IN
CLOSE: Final = Next.CLOSE


def after_response(
    draining: bool,
    evict: str,
    keep_alive: bool,
    keeping: bool,
    retiring: bool,
    more: bool,
    closed: bool,
) -> Next:
    """``draining``: the connection was draining (the run stops); ``evict``: why it must
    be closed whatever the response said ('' = no reason); ``keep_alive``: the response
    allows reuse; ``keeping``: the worker renews connections now (closed loop, one
    target, not paused, not stopping); ``retiring``: the client stops after this
    request; ``more``: the request bound leaves room for another; ``closed``: the
    target's breaker is CLOSED.

    Asked on every response: the worker calls this on its request path (speed: plain
    arguments, no allocation)."""
    if draining or evict:
        return CLOSE
    if keeping and keep_alive and not retiring and more and closed:
        return RENEW
    return CHECK_IN


# After a failure ------------------------------------------------------------------


@dataclass(slots=True)
class Drop:
    """No request was on the connection: close it (``error``) and refill the pool."""


@dataclass(slots=True)
class Recheck:
    """A health check failed: close the connection (``health_check``); the request,
    never sent, gets a fresh connection (the pool's business, not a failure)."""


@dataclass(slots=True)
class Resend:
    """A stale keep-alive socket: close it (``error``) and send the request once more
    on a fresh connection; ``take_back``: it was counted sent, which it never was."""

    take_back: bool


@dataclass(slots=True)
class Fail:
    """The request failed (``sent``: its last byte had been written); close the
    connection (``error``)."""

    sent: bool


AfterFailure = Drop | Recheck | Resend | Fail
_NOT_STALE: Final = frozenset({"read_timeout", "protocol_error"})  # not a dead socket's signs


def after_failure(
    *,
    phase: str,
    name: str,
    has_request: bool,
    checking: bool,
    injected: bool,
    written: bool,
    reused: bool,
    answered: bool,
    retry_stale: bool,
    idempotent: bool,
    retried: bool,
) -> AfterFailure:
    """A connection broke in ``phase`` (connect, write, read) with error ``name``.

    ``has_request``: a client's request was on it; ``checking``: that was a health
    check; ``injected``: a fault did it (never re-sent); ``written``: every byte of
    the request was written; ``reused``: the connection had carried a request before;
    ``answered``: a byte of the response had arrived; ``retry_stale``, ``idempotent``,
    ``retried``: the setting, the method, and whether this request was re-sent already.

    A re-send is safe only when the socket was provably stale: reused, not a byte of
    answer, an error that a dead peer gives (not a timeout, not garbage), and a method
    that may be sent twice; and only once per request."""
    if not has_request:
        return Drop()
    if checking:
        return Recheck()
    sent = phase == "read" and written
    if (
        retry_stale
        and not injected
        and reused
        and not answered
        and name not in _NOT_STALE
        and idempotent
        and not retried
    ):
        return Resend(take_back=sent)
    return Fail(sent=sent)


# On refusal ---------------------------------------------------------------------------

PARK_MIN: Final = 0.005  # a refused client asks again after at least this long ...
PARK_MAX: Final = 0.1  # ... and at most this long (the breaker may close meanwhile)


@dataclass(slots=True)
class Recycle:
    """The client goes on at once (its next request may go elsewhere or is scheduled)."""


@dataclass(slots=True)
class Park:
    """The client sleeps ``seconds`` before its next request."""

    seconds: float


def on_refusal(open_loop: bool, another_up: bool, open_for: float) -> Recycle | Park:
    """The breaker refused a request. Open loop, the schedule paces: go on. Closed loop,
    a client must not spin at CPU speed against an open breaker: it parks until the
    breaker may admit again (``open_for`` seconds), within [PARK_MIN, PARK_MAX]; unless
    ``another_up`` (another target's breaker is CLOSED, so its next request may go there)."""
    if open_loop or another_up:
        return Recycle()
    return Park(min(PARK_MAX, max(PARK_MIN, open_for)))


# At the drain deadline ----------------------------------------------------------------


class Ending(enum.Enum):
    """How a request still out at the drain deadline ends."""

    ABANDONED = "abandon"  # sent whole, unanswered: requests.abandoned
    CANCELLED = "cancel"  # never reached the target: requests.unsent (cancelled)


def at_drain_deadline(on_connection: bool, written: bool, reading: bool) -> Ending:
    """``on_connection``: the client's request is on a connection (SENDING); ``written``:
    all of it was written; ``reading``: the connection waits for its response (BUSY or
    DRAINING, not a health check). Anything else was never sent."""
    if on_connection and written and reading:
        return Ending.ABANDONED
    return Ending.CANCELLED
