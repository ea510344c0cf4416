"""The warm-up (``--warmup``): load before the measured period, counted apart.

A worker with a warm-up opens its pool, then sends a ramp of requests -- the rate
or the concurrency growing from nothing to full over the warm-up -- so that the
measured period starts on connections that have served, on a target whose caches
and JIT are warm. Its phases, every one named (a worker without a warm-up goes
straight to the measured load)::

    RAMPING   requests issued as the load's shape says, ramping up
    SETTLING  nothing new is issued; the warm-up's requests in flight end (within
              the drain timeout: what is left is abandoned or cancelled and its
              connection closed, as a drain would)
    SEALED    its counts set apart (:func:`workers.shared.shm.seal_warmup`); the measured
              period starts from zero on the warm pool, nothing of the warm-up in flight

Why settle and seal rather than tag each request with its phase: the request path
pays nothing for the split, and each part keeps the ledger's identity
(``sent = ok + failed + lost + abandoned``) on its own -- the warm-up's requests
all ended before the measured ones begin. The target's own count is the sum of
both. A stop during the warm-up settles it the same way; the measured period is
then empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from workers.exchange.drain import Drain
from workers.loop.eventloop import Loop
from workers.loop.ports import Opening
from workers.loop.runstate import RunState
from workers.pool import client as cl
from workers.pool.client import Client
from workers.pool.connection import CONNECTING, HANDSHAKING, IDLE, Connection
from workers.shared import statetable as table
from workers.shared.meter import Meter

RAMPING: Final = "RAMPING"
SETTLING: Final = "SETTLING"
SEALED: Final = "SEALED"
STATES: Final = (RAMPING, SETTLING, SEALED)

# fmt: off
TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    RAMPING:  {"over": SETTLING},   # its time is up, or a stop came
    SETTLING: {"settled": SEALED},  # nothing in flight, or the drain timeout passed
    SEALED:   {},
}
# fmt: on

#: Connections that carry no request and may stay in the pool past the seal (an
#: opening one whose client was cancelled is orphaned first: a refill).
_OPENING: Final = frozenset({CONNECTING, HANDSHAKING})
_KEPT: Final = _OPENING | {IDLE}


class Warmup:
    """One worker's warm-up (see the module docstring); ``state`` moves by :meth:`fire`."""

    __slots__ = (
        "conns",
        "drain",
        "drain_timeout",
        "loop",
        "meter",
        "opening",
        "publish",
        "run",
        "seal",
        "state",
    )

    def __init__(
        self,
        run: RunState,
        loop: Loop,
        drain: Drain,
        conns: dict[int, Connection],
        meter: Meter,
        drain_timeout: float,
        opening: Opening,
        seal: Callable[[], None],
        publish: Callable[[], None],
    ) -> None:
        self.run, self.loop, self.drain, self.conns = run, loop, drain, conns
        self.meter = meter
        self.drain_timeout = drain_timeout
        self.opening = opening  # the dialer
        self.seal = seal  # the shared view's: copies the slot into its WARMUP block
        self.publish = publish  # the upkeep's: readers learn of the warm-up at once
        self.state = RAMPING

    def fire(self, event: str) -> str:
        self.state = table.fire(TRANSITIONS, self.state, event, self)
        return self.state

    def begin(self) -> None:
        """The warm-up begins, before the pool opens: from here on (readers learn it at
        once) every count of the slot is the warm-up's, its connections included."""
        run = self.run
        run.warmup_at = run.now = run.clock()
        self.publish()

    def run_for(
        self, end: float, start: Callable[[float, float], None], settle_by: float = 0.0
    ) -> None:
        """Send the warm-up's ramp until ``end`` (monotonic): ``start(base, ramp)``
        starts the load (the worker's own start, the measured period's too); then
        settle (within the drain timeout, and by ``settle_by`` if given: the shards'
        measured start) and seal."""
        run = self.run
        run.now = base = run.clock()
        cap, run.issue_cap = run.issue_cap, math.inf  # --requests bounds the measured period
        start(base, max(end - base, 0.0))
        self.loop.turn_until(lambda: run.stop_requested or run.clock() >= end, None, end)
        self.fire("over")
        self.loop.release_lane()  # open loop: the lane's idle connections, the pool's again
        self.drain.cancel_backlog(run.now)  # open loop: what waited is cancelled, counted
        run.issue_cap = run.issued  # nothing new: each client retires after its request
        kept, run.schedule = run.schedule, None  # open loop: nothing more falls due
        limit = run.clock() + self.drain_timeout
        if settle_by:
            limit = min(limit, settle_by)
        self.loop.turn_until(lambda: run.in_flight == 0 or run.clock() >= limit, None, limit)
        self._settle()
        self.seal()
        self.fire("settled")
        run.issued, run.issue_cap = 0, cap
        if not run.stop_requested:  # (stopped: no schedule, nothing falls due)
            run.schedule = kept  # restarted by the measured period's start
        run.clients = [Client(i) for i in range(run.concurrency)]  # the measured period's

    def _settle(self) -> None:
        """Every client done, nothing in flight, no connection left mid-request."""
        run = self.run
        if run.in_flight:
            self.drain.at_deadline()  # abandoned or cancelled: counted, in the warm-up
        for conn in self.conns.values():
            if conn.owner is not None and conn.state in _OPENING:
                conn.owner = None  # its client was cancelled: a refill now, for the pool
        for client in run.clients:
            if client.state is cl.PAUSED or client.state is cl.READY:
                self.loop.deadlines.disarm(client)  # parked: its wakeup must not issue
                client.fire("retire")
        run.ready.clear()
        run.renewed.clear()
        run.free.clear()
        for conn in list(self.conns.values()):
            if conn.state not in _KEPT:  # an abandoned request's answer may still come
                self.meter.shutdown()
                self.opening.close(conn, "")

    def __repr__(self) -> str:
        return f"<Warmup {self.state} in_flight={self.run.in_flight}>"
