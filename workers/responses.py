"""Responses: framing, counting, and what happens to the connection next.

httptools frames each response; a complete one is counted (status class, latency
histogram, target counter) in this worker's slot, then its connection is kept
by the same client (closed loop, one target: its next request goes out in the
burst after this wakeup's responses, :meth:`Responses._send_renewed`), checked in,
or closed.
"""

from __future__ import annotations

from typing import Final

import httptools

from poolsvc import shm
from workers import connection as cx
from workers import load
from workers import pool as pl
from workers.connection import CHECKING, CLOSED, READING, Connection
from workers.errors import oserror_name
from workers.histogram import bucket_of
from workers.http import close_delimited
from workers.load import SENDING, Client
from workers.requests import Requests
from workers.stats import (
    BYTES_IN,
    BYTES_OUT,
    CONN_REUSED,
    HIST2_BASE,
    HIST_BASE,
    LAT2_MAX,
    LAT_MAX,
    LAT_SUM,
    REQ_OK,
    REQ_SENT,
    REQ_TOTAL,
    RESP_BASE,
)
from workers.target import Target

RECV_SIZE: Final = 65536
_DONE, _CHECKOUT, _SEND = cx.ON["done"], cx.ON["checkout"], cx.ON["send"]


class Responses(Requests):
    """The response layer of the worker (see the module docstring)."""

    def _readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._read_failed(conn, oserror_name(exc))
            return
        if not data or conn.state not in READING:
            self._read_ended(conn)
            return
        self.s[BYTES_IN] += len(data)
        if not conn.status:  # the header block so far, for close_delimited at EOF
            conn.head = data if conn.head is None else conn.head + data
        try:
            conn.parser.feed_data(data)
        except httptools.HttpParserError:
            self._conn_failed(conn, "read", "protocol_error")
            return
        if conn.complete:
            self._response_done(conn)

    def _read_ended(self, conn: Connection) -> None:
        """EOF on a connection, or bytes on one that is not waiting for a response."""
        if conn.state not in READING:
            self._close(conn, "peer_closed")  # FIN, RST or stray bytes on an idle socket
        elif conn.status and not conn.complete and conn.head and close_delimited(conn.head):
            conn.keep_alive = False
            self._response_done(conn)
        else:
            self._read_failed(conn, "early_eof")

    def _response_done(self, conn: Connection) -> None:
        """Count a complete response, then keep, check in or close its connection."""
        client: Client = conn.owner
        self.now = now = self.clock()
        conn.deadline = 0.0  # disarmed (see workers.timers: its heap entry dies lazily)
        if conn.state is CHECKING:
            self._health_done(client, conn)
            return
        s = self.s
        conn.requests += 1
        conn.owner = None
        client.conn = None
        self.in_flight -= 1
        us = int((now - client.start) * 1_000_000)
        s[REQ_TOTAL] += 1
        s[REQ_OK] += 1
        status = conn.status
        if 100 <= status < 600:
            s[RESP_BASE + status // 100] += 1
        s[LAT_SUM] += us
        if us > s[LAT_MAX]:
            s[LAT_MAX] = us
        s[HIST_BASE + bucket_of(us)] += 1
        if self.schedule is not None:  # open loop: also from the actual send (uncorrected)
            raw = int((now - client.sent_at) * 1_000_000)
            s[HIST2_BASE + bucket_of(raw)] += 1
            if raw > s[LAT2_MAX]:
                s[LAT2_MAX] = raw
        target = self.targets[conn.target]
        if status < 500 or not self.settings.count_5xx:
            self.w[target.ok_word] += 1
            target.last_ok = now
            if target.consec or client.trial or target.pool.backoff.attempt:
                self._target_recovered(target, client)
        else:
            self._target_failed(target, client)
            if target.pool.backoff.attempt:  # an answer: connecting works again
                target.pool.backoff.success()
        conn.state = state = _DONE[conn.state]
        if state is CLOSED:  # it was DRAINING
            self._close(conn, "")
        elif (
            self.keeping
            and conn.keep_alive
            and not client.retire
            and self.issued < self.issue_cap
            and not self.w[target.breaker_word] & 0xFF
            and target.pool.renew(conn, now)
        ):
            # Closed loop, one target: the client keeps the connection it just used and
            # its next request goes out once this wakeup's responses are all read.
            conn.state = _CHECKOUT[state]
            self.issued += 1
            self.in_flight += 1
            client.retried = False
            client.trial = 0
            client.conn = conn
            self.renewed.append(client)
            return
        else:
            self._checkin(target, conn)
        if self.schedule is None:
            self._next(client)  # closed loop: the next request at once
        else:
            client.state = load.READY
            self.free.append(client)

    def _send_renewed(self) -> None:
        """Send the requests that ``_response_done`` queued while reading one wakeup's responses.

        Reading every response of a wakeup first and then writing the next requests
        back to back (as wrk does: it re-arms writability and writes on the next loop
        turn) lets the target work through a burst instead of being woken for each
        request: on loopback the waking is paid on our core, inside ``send``.  Each
        request's latency is measured from its own send, not from when it was queued.

        This is :meth:`_send` for the one-target closed loop without per-request faults,
        with the counters of a complete write added once for the whole burst.
        """
        queued, self.renewed = self.renewed, []
        clock = self.clock
        if self.inject_requests:  # every request draws for the faults: the full path
            for client in queued:
                client.start = clock()
                self._send(client, client.conn)
            return
        target = self.targets[0]
        data, head_only = target.request, target.head_only
        size = len(data)
        deadline = self.now + self.settings.read_timeout
        arm = self.deadlines.arm
        whole = 0
        for client in queued:
            conn = client.conn
            client.state = SENDING
            conn.owner = client
            conn.reset_response(head_only)
            conn.state = _SEND[conn.state]
            client.start = clock()
            try:
                n = conn.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._conn_failed(conn, "write", oserror_name(exc))
                continue
            if n == size:
                whole += 1
            else:
                self.s[BYTES_OUT] += n
                self._write_later(conn, data, n)
            if conn.heap_when and deadline >= conn.heap_when:
                conn.deadline = deadline  # its earlier heap entry re-arms it (timers: lazy)
            else:
                arm(conn, deadline)
        s = self.s
        s[CONN_REUSED] += len(queued)
        s[REQ_SENT] += whole
        s[BYTES_OUT] += whole * size

    def _target_recovered(self, target: Target, client: Client) -> None:
        """After a success: end the failure streak, report a half-open trial, reset backoff."""
        if target.consec:
            target.consec = 0
            self.w[self.shared.targets[target.index] + shm.T_CONSEC] = 0
        if client.trial:
            self.shared.trial_result(target.index, client.trial, True)
        if target.pool.backoff.attempt:
            target.pool.backoff.success()

    def _checkin(self, target: Target, conn: Connection) -> None:
        act, waiter, reason = target.pool.checkin(conn, self.now, conn.keep_alive)
        if act is pl.HANDOFF:
            self.deadlines.disarm(waiter)  # type: ignore[arg-type]
            self._dispatch(waiter, conn)  # type: ignore[arg-type]
        elif act is pl.CLOSE:
            self._close(conn, reason)

    def _health_done(self, client: Client, conn: Connection) -> None:
        if 200 <= conn.status < 400 and conn.keep_alive:
            conn.fire("done")
            self._send(client, conn)
            return
        self._close(conn, "health_check", refill=False)
        self._reconnect(client)  # at most one failed check per request: then a fresh socket
