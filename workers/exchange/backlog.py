"""The open loop's backlog: due requests that wait for a connection, as a count.

A request of the open loop is due at its intended time (:class:`workers.loop.loadshape.Schedule`).
When its target's pool has an idle connection or room for one, it is issued at
once; when the pool is *saturated* (every connection busy, none may be opened) it
stays in the schedule: the backlog of a target is its requests due and not yet
taken, a number, never a queue of objects. A response that frees a connection
takes the oldest of them on the spot (:meth:`workers.exchange.responses.Responses.response_done`),
so at capacity every connection goes from one response straight to the next
request, and its latency still counts from the intended time (CO corrected).

Overload then costs O(1) per event whatever the backlog: what waited longer than
the pool's wait timeout fails as ``pool_timeout``, what exceeds ``max_backlog``
is ``dropped``, and what is left when the run stops is ``cancelled`` -- each in
one step per target, counted by name, never silently (:meth:`Schedule.count_by`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from workers.loop.runstate import RunState
from workers.pool.client import Client
from workers.pool.target import Target
from workers.shared.meter import Meter


class Backlog:
    """Fires one worker's due requests and settles its backlog (see the module docstring).

    ``issue(client, intended, target)`` sends a request on the request path."""

    __slots__ = ("issue", "max_backlog", "meter", "run", "targets")

    def __init__(
        self,
        run: RunState,
        targets: Sequence[Target],
        meter: Meter,
        issue: Callable[[Client, float, int], None],
    ) -> None:
        self.run = run
        self.targets = targets
        self.meter = meter
        self.max_backlog = run.max_backlog
        self.issue = issue

    def fire_due(self, now: float) -> None:
        """Issue every due request whose target can have a connection now; leave the
        rest in the schedule; set ``run.next_due``, when this must run again."""
        run = self.run
        sched = run.schedule
        run.next_due = math.inf
        if sched is None or run.stopping:
            return
        end = run.end_at
        nxt = math.inf
        waiting = 0
        for target in self.targets:
            t = target.index
            pool = target.pool
            while True:
                at = sched.due_of(t)
                if end and at >= end:
                    break  # due at or after the end: not part of this run (the bound is exact)
                if pool.saturated():  # it waits in the schedule: a response takes it (or the
                    # lane's parked connection, when it falls due): only its timeout is ours
                    if at <= now:
                        waiting += self._hold(target, now, waiting)
                        at = sched.due_of(t)
                    if not (end and at >= end):
                        nxt = min(nxt, at + pool.settings.wait_timeout)
                    break
                if at > now:
                    nxt = min(nxt, at)
                    break
                if run.issued >= run.issue_cap:
                    return
                sched.take_of(t)
                client = run.free.pop() if run.free else self._client()
                self.issue(client, at, t)
        run.next_due = nxt

    def _client(self) -> Client:
        run = self.run
        client = Client(len(run.clients))
        run.clients.append(client)
        return client

    def _hold(self, target: Target, now: float, waiting: int) -> int:
        """``target``'s pool is saturated: time out what waited too long, drop what the
        backlog cannot hold (``waiting``: the other targets' backlog); how many wait."""
        run = self.run
        sched = run.schedule
        assert sched is not None
        t, end = target.index, run.end_at
        wait = target.pool.settings.wait_timeout
        late = sched.backlog(t, now - wait, end)
        late = min(late, int(min(run.issue_cap - run.issued, late)))
        if late:
            self._fail(target, late, now)
        left = sched.backlog(t, now, end)
        over = left + waiting - self.max_backlog
        if over > 0:
            sched.skip(t, over)
            self.meter.dropped(over)  # counted, never silently skipped
            left -= over
        return left

    def _fail(self, target: Target, n: int, now: float) -> None:
        """The oldest ``n`` requests waited for a connection longer than the pool's wait
        timeout: each fails as ``pool_timeout`` (unsent, phase pool, the pool's own
        fault), timed from when it was due, as Failures.fail counts one; in one step
        whatever ``n`` is (:meth:`workers.loop.loadshape.Schedule.waits`)."""
        sched = self.run.schedule
        assert sched is not None
        buckets, total, top = sched.waits(target.index, n, now)
        sched.skip(target.index, n)
        self.run.issued += n
        self.meter.timed_out(target, n, buckets, total, top)
        target.last_fail = now

    def cancel(self, now: float) -> int:
        """The load stops: every request due and not sent is cancelled (``unsent.cancelled``,
        as :meth:`workers.exchange.drain.Drain.cancel` counts one); how many."""
        run, sched = self.run, self.run.schedule
        if sched is None:
            return 0
        cancelled = 0
        for target in self.targets:
            n = sched.backlog(target.index, now, run.end_at)
            n = int(min(n, run.issue_cap - run.issued))
            if n <= 0:
                continue
            sched.skip(target.index, n)
            run.issued += n
            self.meter.cancelled(n)
            cancelled += n
        return cancelled

    def forgive(self, now: float) -> int:
        """The schedule changes (a new rate, a pause): what is due and waiting is dropped,
        counted, before the new schedule owes nothing from before; how many."""
        run, sched = self.run, self.run.schedule
        if sched is None:
            return 0
        dropped = 0
        for target in self.targets:
            n = sched.backlog(target.index, now, run.end_at)
            if n > 0:
                sched.skip(target.index, n)
                dropped += n
        self.meter.dropped(dropped)
        run.next_due = now
        return dropped

    def __repr__(self) -> str:
        sched = self.run.schedule
        now = self.run.now
        waiting = [sched.backlog(t.index, now) for t in self.targets] if sched else []
        return f"<Backlog waiting={waiting} max={self.max_backlog}>"
