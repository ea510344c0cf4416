"""The event loop: one epoll set, the deadlines and the waker; it performs, it decides nothing.

Theory of operation.  A connection's fd is registered once for ``EPOLLIN`` and
stays registered for its whole life, idle included: a FIN, an RST or stray bytes
on an idle socket wake the loop, which evicts it at once (event-driven reaping,
like Go's ``readLoop``).  ``EPOLLOUT`` is added only while a connect or a partial
write is pending.  A request on a warm connection therefore costs one ``send``,
one ``recv`` and a share of one ``epoll_wait``; no JSON, lock, log line or heap
push (deadlines are re-armed lazily, see :mod:`workers.loop.timers`).

One turn of the loop: wait for events (or the next deadline, tick, intended send
time); hand each to its part (a connect finished, a socket is writable or
readable); send the requests that the responses of this wakeup renewed, in one
burst (:meth:`workers.exchange.requests.Requests.send_renewed`); fire the deadlines that
passed; start the clients that are due; open loop, issue what the schedule says
is due; every :data:`TICK`, the upkeep; and begin the drain when the run is over.

With the accelerated path (:mod:`workers.lane.fastpath`), the lane's ``poll`` stands in
for ``epoll.poll``: it handles its members' responses and their renewed requests
in C and returns, as ``poll`` would, only the events that are the Python path's;
what it hands back is settled right after them, before the burst.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from workers.loop.ports import Lane
from workers.loop.runstate import RunState
from workers.loop.timers import Deadlines
from workers.loop.waker import Waker, make_waker
from workers.pool.client import Client
from workers.pool.connection import CLOSED, Connection

TICK: Final = 0.1  # seconds between gauge publishes, idle sweeps and refills
IN: Final = select.EPOLLIN
OUT: Final = select.EPOLLOUT


@dataclass(slots=True)
class Handlers:
    """What the loop hands events to (the worker's parts, bound by the worker)."""

    ready: dict[int, Connection]  # fd -> established connection: the dialer's
    every: dict[int, Connection]  # fd -> every open connection, opening ones included
    connected: Callable[[Connection], None]  # a connect or TLS handshake can go on
    writable: Callable[[Connection], None]  # the rest of a partial write may go
    readable: Callable[[Connection], None]  # bytes, EOF or an error arrived
    settle: Callable[[], None]  # the lane handed connections back (workers.lane.fastpath)
    send_renewed: Callable[[], None]  # the burst of this wakeup's renewed requests
    expired: Callable[[Any], None]  # a connection's or a client's deadline passed
    next: Callable[[Client], None]  # a ready client's next request
    fire_due: Callable[[float], None]  # open loop: issue what is due
    tick: Callable[[float], None]  # the upkeep
    begin_drain: Callable[[], None]  # the run is over: stop issuing
    abandon: Callable[[], None]  # the drain time is up: end what is still out


class Loop:
    """The epoll set, the deadlines and the open loop's waker of one worker."""

    __slots__ = ("deadlines", "ep", "idle", "lane", "on", "run", "waker")

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.ep = select.epoll()
        self.deadlines = Deadlines()
        self.waker: Waker | None = None  # open loop: wakes the loop at intended send times
        self.on: Handlers | None = None
        # The accelerated path (workers.lane.fastpath): it stands in for ``ep.poll``, handling
        # its members' responses itself and returning the other events.
        self.lane: Lane | None = None
        self.idle = 0.0  # seconds spent waiting in ``poll`` (the lane keeps its own)

    def add(self, fd: int, events: int) -> None:
        self.ep.register(fd, events)

    def set(self, fd: int, events: int) -> None:
        """Change what ``fd`` is watched for (0: nothing, it stays registered)."""
        self.ep.modify(fd, events)

    def remove(self, fd: int) -> None:
        self.ep.unregister(fd)

    def fileno(self) -> int:
        """The epoll descriptor (-1 once closed): part of the worker's own fds."""
        return -1 if self.ep.closed else self.ep.fileno()

    def start_waker(self) -> None:
        """Open loop: sub-millisecond wakeups for the intended send times."""
        self.waker = make_waker()
        if self.waker is not None:
            self.ep.register(self.waker.fd, IN)

    def stop_waker(self) -> None:
        if self.waker is not None:
            self.waker.close()
            self.waker = None

    def close(self) -> None:
        self.stop_waker()
        if self.lane is not None:
            self.lane.close()
        self.ep.close()

    def turn_until(
        self, finished: Callable[[], bool], drain_timeout: float | None, by: float = 0.0
    ) -> None:
        """Turn until ``finished()``; ``drain_timeout`` (None: no drain, the warm-up):
        when the run is over the drain begins, and that long after it, the end. ``by``
        (monotonic, 0: none): a time at which ``finished()`` is asked at the latest
        (the lane's poll returns by then, however busy its members keep it)."""
        on = self.on
        assert on is not None
        run = self.run
        lane = self.lane
        poll = self.ep.poll if lane is None else lane.poll
        ready_conns, every = on.ready, on.every
        deadlines = self.deadlines
        # Bound once: the loop calls these for every event or wakeup (speed: a handler
        # is a dataclass slot, and a slot called as a method is a lookup that does not
        # specialize).
        connected, writable, readable = on.connected, on.writable, on.readable
        send_renewed, expired, next_request = on.send_renewed, on.expired, on.next
        next_tick = run.now
        drain_until = 0.0
        while not finished():
            timeout = 0.0 if run.ready else self._timeout(next_tick, by)
            if lane is None:
                waited = run.clock()
                events = poll(timeout)
                run.now = now = run.clock()
                self.idle += now - waited
            else:  # the lane counts its own waits (between them, it works)
                events = poll(timeout)
                run.now = now = run.clock()
            for fd, ev in events:
                conn = ready_conns.get(fd)
                if conn is None:  # a connection still opening (connect, TLS), or the waker
                    opening = every.get(fd)
                    if opening is not None:
                        connected(opening)
                    elif self.waker is not None and fd == self.waker.fd:
                        self.waker.fired()
                    continue
                if ev & OUT and conn.out is not None:
                    writable(conn)
                if ev & ~OUT and conn.state is not CLOSED:
                    readable(conn)
            if lane is not None:
                on.settle()  # before the burst: a response read there may renew a request
            if run.renewed:
                send_renewed()
            if deadlines.next_when() <= now:
                for obj in deadlines.pop_expired(now):
                    expired(obj)
            ready = run.ready
            for _ in range(len(ready)):
                next_request(ready.popleft())
            if run.schedule is not None and not run.paused:
                on.fire_due(now)
            if now >= next_tick:
                next_tick = now + TICK
                on.tick(now)
            if drain_timeout is None:
                continue
            if not run.stopping and (run.stop_requested or (run.end_at and now >= run.end_at)):
                self.release_lane()  # what the lane holds idle is the pool's, as a drain sees it
                on.begin_drain()
                drain_until = now + drain_timeout
            if drain_until and now >= drain_until:
                on.abandon()  # the deadline: what is still out is counted, not lost
                return

    def _timeout(self, next_tick: float, by: float = 0.0) -> float:
        run = self.run
        when = next_tick if not by or next_tick < by else by
        heap_next = self.deadlines.next_when()
        if heap_next and heap_next < when:
            when = heap_next
        if run.end_at and not run.stopping and run.end_at < when:
            when = run.end_at
        if run.schedule is not None and not run.stopping and not run.paused:
            due = run.next_due  # workers.exchange.backlog: a due request, or a backlog's timeout
            if self.waker is not None and due < when:
                self.waker.arm(due)  # wakes us exactly then; epoll's own timeout is in ms
            else:
                when = min(when, due)
        return max(0.0, when - run.now)

    def release_lane(self) -> None:
        """The lane's parked connections (open loop: idle between requests) go back to
        the pool now, before the warm-up's settling or the drain looks at the pool."""
        if self.lane is not None and self.lane.parked:
            assert self.on is not None
            self.lane.unpark()
            self.on.settle()

    def waited(self) -> float:
        """Seconds this loop has spent waiting for events (in ``poll``, or the lane's)."""
        return self.idle + (self.lane.waited if self.lane is not None else 0.0)

    def busy(self) -> float:
        """Seconds of the measured load so far that the loop was working, not waiting: a
        generator whose loop is busy all the load long was the limit of the run."""
        run = self.run
        if not run.started_at:
            return 0.0
        return max(0.0, run.now - run.started_at - (self.waited() - run.idle_mark))

    def __repr__(self) -> str:
        return (
            f"<Loop fd={self.fileno()} deadlines={len(self.deadlines)} waker={self.waker} "
            f"lane={self.lane}>"
        )
