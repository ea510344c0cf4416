"""Responses: framing, counting, and what happens to the connection next.

httptools frames each response; a complete one is counted (status, latency
histogram, target counters) in this worker's slot, and then
:func:`workers.exchange.decide.after_response` says what becomes of its connection: kept
by the same client for its next request (closed loop, one target: the request
goes out in the burst after this wakeup's responses, see
:meth:`workers.exchange.requests.Requests.send_renewed`), checked in, or closed.

What a target may send is untrusted: a header block longer than
``max_header_bytes``, a second response nobody asked for, a 101, garbage or an
early EOF each end the request by name, and the connection with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import httptools

from workers.exchange import decide
from workers.exchange.decide import RENEW, after_response
from workers.loop.ports import Peers
from workers.loop.runstate import RunState
from workers.loop.timers import Deadlines
from workers.loop.workerspec import LoopSettings
from workers.net.httpwire import close_delimited, final_head
from workers.pool import client as cl
from workers.pool import connection as cx
from workers.pool.client import Client
from workers.pool.connection import BUSY, CHECKING, CLOSED, DRAINING, READING, Connection
from workers.pool.shard import Close, Handoff
from workers.pool.target import Target
from workers.shared.admission import SharedView
from workers.shared.errors import oserror_name
from workers.shared.histogram import bucket_of
from workers.shared.meter import Meter
from workers.shared.shm import CODE_MASK

RECV_SIZE: Final = 65536
# The moves of the response path, looked up once: connection (_C_) and client tables.
_C_DONE, _C_CHECKOUT = cx.ON["done"], cx.ON["checkout"]
_DONE = cl.ON["done"]


class Responses:
    """Reads, counts and settles one worker's responses (see the module docstring).

    It reaches the dialer (``peers.opening``), the request path (``peers.issuing``)
    and the failures (``peers.settling``); every count goes to ``meter``."""

    __slots__ = (
        "count_5xx",
        "deadlines",
        "max_head",
        "meter",
        "peers",
        "run",
        "shared",
        "success",
        "targets",
        "w",
    )

    def __init__(
        self,
        run: RunState,
        deadlines: Deadlines,
        targets: Sequence[Target],
        shared: SharedView,
        meter: Meter,
        peers: Peers,
        settings: LoopSettings,
    ) -> None:
        self.run = run
        self.deadlines = deadlines
        self.targets = targets
        self.shared = shared
        self.w = shared.words  # read: the breaker rows
        self.meter = meter
        self.peers = peers
        self.max_head = settings.max_header_bytes
        self.success = settings.success
        self.count_5xx = settings.count_5xx

    def readable(self, conn: Connection) -> None:
        """Read what arrived on ``conn`` and feed it to its parser."""
        recv = conn.recv  # (a slot: called as a method, the lookup would not specialize)
        try:
            data = recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.peers.settling.read_failed(conn, oserror_name(exc))
            return
        self.received(conn, data)

    def received(self, conn: Connection, data: bytes) -> None:
        """What one ``recv`` on ``conn`` returned (b"": EOF): count it, parse it, and
        settle the response if it is complete (the lane hands bytes over here too)."""
        if not data or conn.state not in READING:
            self._read_ended(conn, data)
            return
        n = len(data)
        self.meter.bytes_in(n)
        in_head = not conn.status
        if in_head:  # still in the header block (interim responses included)
            head = conn.head
            if head is None:
                conn.head = data
            else:  # a header block over several reads grows in place: linear, not quadratic
                if head.__class__ is bytes:
                    conn.head = head = bytearray(head)
                head += data
                n = len(head)
        try:
            conn.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._parse_failed(conn)
            return
        # n: the header bytes so far (with any body bytes of this read): over the limit
        # only in a rare response, where the exact check runs.
        if n > self.max_head and in_head and self._head_too_large(conn):
            return
        if conn.complete:
            if conn.head_only and final_head(conn.head or b"")[1] < len(conn.head or b""):
                self.response_done(conn, "unsolicited")  # bytes after a HEAD response
            else:
                self.response_done(conn)

    def _parse_failed(self, conn: Connection) -> None:
        """httptools stopped: a second response began (desync), a 101, or garbage."""
        if conn.complete:  # the response was whole; what followed it nobody asked for
            self.response_done(conn, "unsolicited")
        elif conn.status == 101:
            self.peers.settling.conn_failed(conn, "read", "unexpected_upgrade")
        else:
            self.peers.settling.conn_failed(conn, "read", "protocol_error")

    def _head_too_large(self, conn: Connection) -> bool:
        """Fail the request if its header block (interim responses included) passed
        ``max_header_bytes``; the connection is closed, its rest never read."""
        head = conn.head or b""
        _start, end = final_head(head)
        if (end if end >= 0 else len(head)) <= self.max_head:
            return False
        self.peers.settling.conn_failed(conn, "read", "header_too_large")
        return True

    def _read_ended(self, conn: Connection, data: bytes) -> None:
        """EOF on a connection, or bytes on one that is not waiting for a response."""
        if conn.state not in READING:  # idle (or reserved): FIN, RST or bytes nobody asked for
            if data and not conn.requests:  # a target that talks first: do not reconnect at once
                self.targets[conn.target].pool.backoff.failure(self.run.now)
            self.peers.opening.close(conn, "unsolicited" if data else "peer_closed")
        elif conn.status and not conn.complete and conn.head and close_delimited(conn.head):
            conn.keep_alive = False
            self.response_done(conn)
        else:
            self.peers.settling.read_failed(conn, "early_eof")

    def response_done(self, conn: Connection, evict: str = "") -> None:
        """Count a complete response, then keep, check in or close its connection
        (``evict``: close it for this reason whatever the response said)."""
        client: Client = conn.owner
        run = self.run
        run.now = now = run.clock()
        conn.deadline = 0.0  # disarmed (see workers.loop.timers: its heap entry dies lazily)
        if conn.state is CHECKING:
            self._health_done(client, conn, evict)
            return
        conn.requests += 1
        run.in_flight -= 1
        us = int((now - client.start) * 1_000_000)
        status = conn.status
        # open loop: also from the actual send (uncorrected)
        raw = -1 if run.schedule is None else int((now - client.sent_at) * 1_000_000)
        target = self.targets[conn.target]
        healthy = status < 500 or not self.count_5xx
        self.meter.answered(target, status, self.success[status], us, raw, bucket_of(us), healthy)
        if healthy:
            target.last_ok = now
            if target.consec or client.trial or target.pool.backoff.attempt:
                self._target_recovered(target, client)
        else:
            self.peers.settling.target_failed(target, client)
            if target.pool.backoff.attempt:  # an answer: connecting works again
                target.pool.backoff.success()
        conn.state = state = _C_DONE[conn.state]
        sched = run.schedule
        keeping = run.keeping
        due = 0.0
        if sched is not None and not run.stopping and not run.paused:
            # open loop: a request of this target is due (its backlog): it takes the
            # connection now, from its intended time (workers.exchange.backlog)
            due = sched.due_of(conn.target)
            keeping = due <= now and (not run.end_at or due < run.end_at)
        # The facts go straight into the call (speed: no locals to store and load).
        after = after_response(
            state is CLOSED,  # it was DRAINING: done means closed
            evict,
            conn.keep_alive,
            keeping,
            client.retire,
            run.issued < run.issue_cap,
            not self.w[target.breaker_word] & CODE_MASK,  # CLOSED (breaker_code, inline)
        )
        if after is RENEW and target.pool.renew(conn, now):
            # The client keeps the connection it just used (the pair stays linked,
            # client.conn and conn.owner) and its next request goes out once this
            # wakeup's responses are all read.
            conn.state = _C_CHECKOUT[state]
            run.issued += 1
            run.in_flight += 1
            client.retried = False
            client.trial = 0
            if sched is not None:  # the due request it takes: latency from its time
                client.start = due
                sched.k[conn.target] += 1
            run.renewed.append(client)
            return
        conn.owner = client.conn = None
        if after is decide.CLOSE:
            self.peers.opening.close(conn, evict)
        else:
            self._checkin(target, conn)
        client.state = _DONE[client.state]
        if sched is None:
            self.peers.issuing.next(client)  # closed loop: the next request at once
        else:
            run.free.append(client)

    def checkin_parked(self, conn: Connection) -> None:
        """The lane held ``conn`` between two requests of the open loop (its last response
        counted there, the request over); it goes back to the pool as response_done's
        check-in would have sent it. A drain that began meanwhile saw it BUSY and marked
        it DRAINING, but it carried no request: it is idle, closed when the run ends."""
        client: Client = conn.owner
        if conn.state is DRAINING:
            conn.state = BUSY  # (it never was: idle in the lane, not in flight)
        conn.state = _C_DONE[conn.state]
        conn.owner = client.conn = None
        self._checkin(self.targets[conn.target], conn)
        client.state = _DONE[client.state]
        self.run.free.append(client)

    def _target_recovered(self, target: Target, client: Client) -> None:
        """After a success: end the failure streak, report a half-open trial, reset backoff."""
        if target.consec:
            target.consec = 0
            self.meter.streak_ended(target.index)
        if client.trial:
            self.shared.trial_result(target.index, client.trial, True)
        if target.pool.backoff.attempt:
            target.pool.backoff.success()

    def _checkin(self, target: Target, conn: Connection) -> None:
        match target.pool.checkin(conn, self.run.now, conn.keep_alive):
            case Handoff(waiter):  # straight to a client that waited for a connection
                self.deadlines.disarm(waiter)
                self.peers.issuing.dispatch(waiter, conn)
            case Close(reason):
                self.peers.opening.close(conn, reason)

    def _health_done(self, client: Client, conn: Connection, evict: str) -> None:
        if 200 <= conn.status < 400 and conn.keep_alive and not evict:
            conn.fire("done")
            self.peers.issuing.send(client)
            return
        self.peers.opening.close(conn, evict or "health_check", refill=False)
        # at most one failed check per request: then a fresh socket
        self.peers.settling.reconnect(client)

    def __repr__(self) -> str:
        return f"<Responses targets={len(self.targets)} max_head={self.max_head}>"
