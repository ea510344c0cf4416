"""The accelerated path: the request path's steady state in C, the Python path its reference.

Theory of operation.  In a run against plain-TCP targets, almost every request
is the same few steps: a whole response arrives on a kept connection, it is
counted, and the next request goes out on the same connection in the wakeup's
burst (``RENEW`` in :mod:`workers.exchange.decide`): in the closed loop (one target) the
same client's next one; in the open loop (any number of targets) the oldest request
of the connection's target due in the schedule (its backlog,
:mod:`workers.exchange.backlog`), whose latency counts from its intended time.  The lane
computes that time as :meth:`workers.loop.loadshape.Schedule.due_of` does, term for term,
and advances that target's cursor; after a response with nothing due it hands the
connection back, and the Python path checks it in.  The
C extension ``workers.lane._lane`` does exactly those steps for the connections it
holds, its *members*, without returning to the interpreter: ``epoll_wait``,
``recv`` into a fixed buffer, a framer, the counters written through a pointer
into this worker's shared-memory slot, the burst of ``send``.

The lane stands in for the loop's ``epoll.poll``: :meth:`Lane.poll` returns the
events it leaves to the Python path, exactly as ``poll`` would.  A connection
becomes a member when :meth:`workers.exchange.requests.Requests.send_renewed` has sent its
renewed request whole (:meth:`Lane.admit`), and stops being one at the first
thing the lane does not handle: a response that is not one whole, plain,
successful, ``Content-Length``-framed keep-alive response in one ``recv``; EOF;
an error; a partial write; a response after which the connection is not
renewed (the request bound, the breaker, a worn connection, a retiring client).
Then the connection is *taken*: handed back with what was read or what went
wrong, before anything was counted, and the Python path does what it always
does (:meth:`Lane.take`, :meth:`Handback.settle`).  Whatever the lane does not recognise,
the Python path decides, with llhttp: the lane's framer accepts only a strict
subset of what llhttp accepts (tests/unit/test_lane.py).

Each member carries its target; the lane keeps each target's request, words, pool
conditions, cursor and parked members.  The run-wide conditions (renewing, or the
open loop's schedule and end; not paused, stopping or injecting) and each target's
(no failure streak, backoff or waiter; the pool within its size) are read each
time the loop calls in, because only the Python path changes them; when the
run's do not hold, the lane has no members and is a plain ``poll``, and when a
target's do not, its members go back to the Python path.  The figures the
Python path keeps on its objects (``conn.requests``, ``conn.deadline``,
``client.start``, ``client.sent_at``, ``run.issued``, ``target.last_ok``, the
schedule's cursors) are written back before every return, so the Python path
never sees a stale one.

``POOLSVC_NO_EXTENSIONS=1`` (at install or at run time), or a machine that could
not build the extension, runs the pure-Python path; :func:`choose` says which path
a run takes, and the report prints it (``run.path``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from workers.loop.ports import Lane, Peers
from workers.pool import client as cl
from workers.pool import connection as cx
from workers.shared import shm
from workers.shared.errors import errno_name
from workers.shared.meter import Meter

if TYPE_CHECKING:
    from workers.loop.runstate import RunState
    from workers.loop.timers import Deadlines
    from workers.loop.workerspec import LoopSettings
    from workers.pool.target import Target, TargetSpec
    from workers.shared.admission import SharedView


def _import() -> Any:
    try:
        from workers.lane import _lane  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _lane


_lane = _import()
ACCELERATED: Final = _lane is not None  # the extension is built and loads here


def path() -> str:
    """The path this process's runs take: "accelerated", or "pure (why)" (read when a
    worker is built, so that a test may switch it)."""
    if os.environ.get("POOLSVC_NO_EXTENSIONS", "") not in ("", "0"):
        return "pure (POOLSVC_NO_EXTENSIONS)"
    return "accelerated" if _lane is not None else "pure (the C extension is not built)"


def choose(specs: Sequence[TargetSpec], rate: float) -> str:
    """The path a run of ``specs`` takes: "accelerated" when the lane can have its
    steady state (plain-TCP targets, no HEAD, keep-alive; one target in the closed
    loop, any number in the open loop), else "pure (why)"."""
    why = next(filter(None, map(_why_not, specs)), "")
    if not why and len(specs) > 1 and not rate:
        # each request of the closed loop picks its target (the round-robin), so a
        # response never renews its connection: there is no steady state to hold
        why = "several targets in the closed loop"
    here = path()
    return here if here != "accelerated" or not why else f"pure ({why})"


def _why_not(spec: TargetSpec) -> str:
    """Why the lane cannot hold this target's connections ("": it can)."""
    if spec.tls is not None:
        return "TLS"  # the lane reads plain sockets; a TLS record is the ssl module's
    if not spec.nodelay or spec.split_writes:
        return "the Nagle study's tuned transport"
    if spec.method == "HEAD":
        return "HEAD requests"
    if not spec.keep_alive:
        return "keep_alive false"  # every response closes its connection: nothing to renew
    return ""


def frame(data: bytes, max_head: int) -> tuple[int, int] | None:
    """The lane's framer (for the tests): (status, head length) or None."""
    assert _lane is not None
    result: tuple[int, int] | None = _lane.frame(data, max_head)
    return result


def bucket_of(us: int) -> int:
    """The lane's histogram bucket (for the tests)."""
    assert _lane is not None
    return int(_lane.bucket_of(us))


def build(
    ep: int,
    run: RunState,
    targets: Sequence[Target],
    shared: SharedView,
    settings: LoopSettings,
    read_timeout: float,
    deadlines: Deadlines,
) -> Lane:
    """The lane of one worker, for its ``targets`` (by index, as ``conn.target`` names
    them); every index it writes comes from the meter
    (:meth:`workers.shared.meter.Meter.lane_words`), :mod:`workers.shared.shm` and each
    target (its breaker, ``ok`` and own-block words), where each is defined."""
    assert _lane is not None
    index = {**Meter.lane_words(), "t_resp_ok": shm.T_RESP_OK, "code_mask": shm.CODE_MASK}
    lane: Lane = _lane.Lane(
        ep=ep,
        slot=shared.slot,
        words=shared.words,
        index=index,
        success=settings.success,
        count_5xx=settings.count_5xx,
        max_head=settings.max_header_bytes,
        read_timeout=read_timeout,
        run=run,
        targets=list(targets),
        arm=deadlines.arm,
        busy=cx.BUSY,
        sending=cl.SENDING,
    )
    return lane


@dataclass(slots=True)
class Handback:
    """Where the connections the lane hands back go on, in the Python path: the
    responses (``peers.answering``), the request path (a partial write's rest) and the
    failures (``peers.settling``)."""

    lane: Lane
    requests: Sequence[bytes]  # each target's request: a partial write's rest goes from it
    peers: Peers

    def settle(self) -> None:
        """Hand each taken connection to the Python path, as if it had read or written
        itself: ``data`` what one ``recv`` returned (b"": EOF), ``error`` the errno of
        a failed ``recv``, ``send_error`` that of a failed ``send`` (the request not
        counted sent), ``partial`` how much of the request went out, ``parked`` an
        open loop's connection the lane held idle (its response counted): checked in."""
        peers = self.peers
        for conn, kind, value in self.lane.take():
            if kind == "data":
                peers.answering.received(conn, value)
            elif kind == "parked":
                peers.answering.checkin_parked(conn)
            elif kind == "error":
                peers.settling.read_failed(conn, errno_name(value))
            elif kind == "partial":
                peers.issuing.write_later(conn, self.requests[conn.target], value)
            else:
                peers.settling.conn_failed(conn, "write", errno_name(value))


# Busy polling ----------------------------------------------------------------------
HOLD: Final = 3  # ticks in a row with a core to spare before the lane spins again


class SpinGovernor:
    """Busy polling only while it pays: when this worker has a core of its own.

    A spin keeps the worker awake for ``busy_poll_us`` before it sleeps, so that a
    response arriving meanwhile costs the target no wakeup (on loopback the target
    pays for waking us).  That helps only when the target runs on another core while
    we spin; when the machine has more runnable tasks than cores (several workers
    beside the target, say), a spin takes the core the target needs.  So each tick
    the worker reads how many tasks are runnable (``/proc/loadavg``, itself
    included) and spins only after :data:`HOLD` ticks in a row with no more of them
    than cores; one crowded tick stops it.
    """

    __slots__ = ("cpus", "lane", "read", "spin", "streak")

    def __init__(
        self,
        lane: Lane,
        spin: float,
        cpus: int,
        read: Callable[[], int | None] | None = None,
    ) -> None:
        self.lane, self.spin, self.cpus = lane, spin, cpus
        self.read = read or runnable
        self.streak = 0
        lane.spin = 0.0

    def tick(self) -> None:
        self.streak = spare_streak(self.read(), self.cpus, self.streak)
        want = self.spin if self.streak >= HOLD else 0.0
        if want != self.lane.spin:
            self.lane.spin = want

    def __repr__(self) -> str:
        return f"<SpinGovernor spin={self.lane.spin * 1e6:.0f}us streak={self.streak}>"


def spare_streak(running: int | None, cpus: int, streak: int) -> int:
    """Ticks in a row with no more runnable tasks than cores (None: unknown, none)."""
    return streak + 1 if running is not None and running <= cpus else 0


def runnable() -> int | None:
    """Tasks runnable on this machine now (the reader included), or None."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None
