"""The worker: one epoll loop that performs what the pool decides.

Theory of operation.  A connection's fd is registered once for ``EPOLLIN`` and
stays registered for its whole life, idle included: a FIN, an RST or stray bytes
on an idle socket wake the loop, which evicts it at once (event-driven reaping,
like Go's ``readLoop``).  ``EPOLLOUT`` is added only while a connect or a partial
write is pending.  A request on a warm connection therefore costs one ``send``,
one ``recv`` and a share of one ``epoll_wait``; no JSON, lock, log line or heap
push (deadlines are re-armed lazily, see :mod:`workers.timers`).

Closed loop with one target, a client keeps the connection its response came
on (``Pool.renew``), and the requests that follow the responses of one wakeup
are written together after all of them are read
(:meth:`workers.responses.Responses._send_renewed`): the target then serves a
burst instead of being woken once per request.

:class:`Worker` is the top layer of the worker (see :mod:`workers.core` for the
layers below it: the request path, the responses, the failures, the state and
its upkeep). Failures are counted by name and phase (:mod:`workers.errors`) in
this worker's stats slot (:mod:`workers.stats`), which only this worker writes.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, Final

from workers import connection as cx
from workers import load
from workers.connection import CLOSED, CONNECTING, Connection
from workers.core import TICK, LoopSettings
from workers.load import Client
from workers.responses import Responses
from workers.waker import make_waker

_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT


__all__ = ["LoopSettings", "Worker"]


class Worker(Responses):
    """Runs ``bounds`` worth of closed-loop load against ``targets``.

    ``shared`` is this worker's window on the shared region: its stats slot, its
    per-target counters, the breaker rows.  ``stop_requested`` may be set from a
    signal handler: the loop stops issuing requests, lets those in flight finish
    within ``drain_timeout``, then closes every socket.  ``watchdog`` is called
    every tick (the worker process uses it to notice a dead supervisor and
    supervisor commands).  ``end_at`` (monotonic) overrides ``bounds.duration``
    for a replacement worker that must stop when the one it replaces would have.
    """

    def run(self) -> None:
        """Warm the pools, run the load until a bound is reached, drain, close."""
        try:
            self._warm_up()
            self.started_at = self.now = self.clock()
            if self.fixed_end:
                self.end_at = self.fixed_end
            elif self.bounds.duration:
                self.end_at = self.started_at + self.bounds.duration
            b = self.bounds
            if b.rate:
                self.schedule = load.Schedule(b.rate, self.started_at, b.ramp, b.stride, b.phase)
                self.waker = make_waker()  # sub-millisecond wakeups for intended send times
                if self.waker is not None:
                    self.ep.register(self.waker.fd, _IN)
            else:
                self._start_clients()
            self._publish()
            self._loop(self._finished, drain=True)
            self.finished_at = self.clock()
            self.issue_end = self.issue_end or self.finished_at  # a request bound ended it
            # After a drain the pool gauges keep the values published when the load
            # stopped (the pool as the load left it); a drain closes what was in flight.
            self._publish(pool_gauges=not self.stopping)
        finally:
            self._close_all()
            self.dead_ends.close()
            if self.waker is not None:
                self.waker.close()
                self.waker = None
            if self.report is not None:  # every socket closed: the count must be the baseline
                self.run_audit("final")
            self.ep.close()
            self.reserve.close()

    def _start_clients(self) -> None:
        """Closed loop: every client now, or (with a ramp) one after another over it."""
        n = len(self.clients)
        for i, client in enumerate(self.clients):
            if not self.bounds.ramp or i == 0:
                self.ready.append(client)
            else:
                client.state = load.PAUSED  # wakes up at its start time and begins
                self.deadlines.arm(client, self.started_at + self.bounds.ramp * i / n)

    def _finished(self) -> bool:
        return self.in_flight == 0 and (self.stopping or self.issued >= self.issue_cap)

    def _warm_up(self) -> None:
        """Open ``min_size`` connections per target before measuring anything."""
        for target in self.targets:
            self._refill(target)
        limit = self.clock() + self.settings.connect_timeout + TICK
        self._loop(
            lambda: (
                self.stop_requested
                or self.clock() > limit
                or not any(t.pool.connecting for t in self.targets)
            ),
            drain=False,
        )

    def _loop(self, finished: Callable[[], bool], drain: bool) -> None:
        poll = self.ep.poll
        conns = self.conns
        next_tick = self.now
        drain_until = 0.0
        while not finished():
            timeout = 0.0 if self.ready else self._timeout(next_tick)
            events = poll(timeout)
            self.now = now = self.clock()
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is None:
                    if self.waker is not None and fd == self.waker.fd:
                        self.waker.fired()
                    continue
                if conn.state is CONNECTING:
                    self._connect_ready(conn)
                    continue
                if ev & _OUT and conn.out is not None:
                    self._flush(conn)
                if ev & ~_OUT and conn.state is not CLOSED:
                    self._readable(conn)
            if self.renewed:
                self._send_renewed()
            if self.deadlines.next_when() <= now:
                for obj in self.deadlines.pop_expired(now):
                    self._expired(obj)
            for _ in range(len(self.ready)):
                self._next(self.ready.popleft())
            if self.schedule is not None and not self.paused:
                self._fire_due(now)
            if now >= next_tick:
                next_tick = now + TICK
                self._tick(now)
            if (
                drain
                and not self.stopping
                and (self.stop_requested or (self.end_at and now >= self.end_at))
            ):
                self._begin_drain()
                drain_until = now + self.settings.drain_timeout
            if drain_until and now >= drain_until:
                self._abandon_in_flight()  # the deadline: what is still out is counted, not lost
                return

    def _timeout(self, next_tick: float) -> float:
        when = next_tick
        heap_next = self.deadlines.next_when()
        if heap_next and heap_next < when:
            when = heap_next
        if self.end_at and not self.stopping and self.end_at < when:
            when = self.end_at
        if self.schedule is not None and not self.stopping and not self.paused:
            due = self.schedule.next_at()
            if self.waker is not None and due < when:
                self.waker.arm(due)  # wakes us exactly then; epoll's own timeout is in ms
            else:
                when = min(when, due)
        return max(0.0, when - self.now)

    def _expired(self, obj: Any) -> None:
        if obj.__class__ is Connection:
            if obj.state is CONNECTING:
                self._connect_failed(obj, "connect_timeout")
            elif obj.state in cx.READING:
                self._conn_failed(obj, "read", "read_timeout")
            return
        client: Client = obj
        if client.state is load.WAITING:
            if self.targets[client.target].pool.cancel_wait(client):
                self._fail(client, "pool", "pool_timeout")
        elif client.state is load.BACKOFF:
            self._acquire(client)
        elif client.state is load.PAUSED:
            client.state = load.READY
            self._next(client)
        elif client.state is load.DELAYED:
            if client.conn is None:  # its reserved connection closed meanwhile
                self._acquire(client)
            else:
                self._send(client, client.conn, draw=False)
