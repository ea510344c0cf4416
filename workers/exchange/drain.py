"""The drain: how a run ends without losing count of a request.

When the run is over (a bound, a stop, a SIGTERM) the worker stops issuing. A
request still waiting for a connection is cancelled (never sent, counted
``unsent.cancelled``); a parked client retires; a busy connection finishes its
response and then closes (DRAINING). Whatever is still out when the drain time is
up ends as :func:`workers.exchange.decide.at_drain_deadline` says: ``abandoned`` if the
target has it whole, else cancelled. Either way it is counted, never lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workers.exchange.decide import Ending, at_drain_deadline
from workers.loop.runstate import RunState
from workers.loop.timers import Deadlines
from workers.pool import client as cl
from workers.pool.client import Client
from workers.pool.connection import BUSY, DRAINING, Connection
from workers.pool.target import Target
from workers.shared.meter import Meter


class Drain:
    """Ends one worker's load (see the module docstring); ``publish`` records the pool
    as the load left it, before shutdown closes it."""

    __slots__ = ("cancel_backlog", "conns", "deadlines", "meter", "publish", "run", "targets")

    def __init__(
        self,
        run: RunState,
        deadlines: Deadlines,
        targets: Sequence[Target],
        conns: dict[int, Connection],
        meter: Meter,
        publish: Callable[[], None],
        cancel_backlog: Callable[[float], int],
    ) -> None:
        self.run = run
        self.cancel_backlog = (
            cancel_backlog  # workers.exchange.backlog: the open loop's due requests
        )
        self.deadlines = deadlines
        self.targets = targets
        self.conns = conns
        self.meter = meter
        self.publish = publish

    def begin(self) -> None:
        """Stop issuing; requests still waiting for a connection are cancelled (counted),
        busy connections close after their response, the rest when the run ends."""
        run = self.run
        run.stopping = True
        run.keeping = False
        run.issue_end = run.now
        run.load_end_times = (
            max(t.last_ok for t in self.targets),
            max(t.last_fail for t in self.targets),
        )
        self.cancel_backlog(run.now)  # due and never sent: cancelled, in one step
        for client in run.clients:
            if client.state is cl.WAITING or client.state is cl.BACKOFF:
                self.cancel(client)
            elif client.state is cl.PAUSED:
                self.deadlines.disarm(client)
                client.fire("retire")
        self.publish()
        for conn in list(self.conns.values()):
            if conn.state is BUSY:
                conn.fire("drain")

    def cancel(self, client: Client) -> None:
        """A request that was never sent ends because the run stops (``unsent.cancelled``)."""
        self.targets[client.target].pool.cancel_wait(client)  # if it was waiting
        self.deadlines.disarm(client)
        self.meter.cancelled()
        client.fire("cancel")
        client.conn = None
        self.run.in_flight -= 1

    def at_deadline(self) -> None:
        """The drain time is up: every request still in flight ends here."""
        for client in self.run.clients:
            if client.state not in cl.IN_FLIGHT:
                continue
            conn = client.conn
            ending = at_drain_deadline(
                on_connection=client.state is cl.SENDING and conn is not None,
                written=conn is not None and conn.out is None,
                reading=conn is not None and (conn.state is BUSY or conn.state is DRAINING),
            )
            if ending is Ending.ABANDONED:
                self.meter.abandoned()
                client.fire("abandon")
                client.conn = None
                self.run.in_flight -= 1
            else:  # waiting for a connection, connecting, checking it, delayed, half written
                self.cancel(client)

    def __repr__(self) -> str:
        return f"<Drain stopping={self.run.stopping} in_flight={self.run.in_flight}>"
