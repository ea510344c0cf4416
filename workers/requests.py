"""The request path up to the wire: target, breaker, pool, send.

A client's next request picks a target (smooth weighted round-robin), passes the
target's breaker (a word in shared memory; only a breaker that is not CLOSED takes
the slow path), then does what the pool decides: use, probe, evict, health-check,
connect, wait or back off. Sending is one ``send`` of the prebuilt request bytes;
a partial write finishes when the socket is writable.
"""

from __future__ import annotations

import select
from typing import Final

from workers import connection as cx
from workers import load
from workers import pool as pl
from workers import stats as st
from workers.admission import REFUSE
from workers.connection import CHECKING, Connection
from workers.core import TICK
from workers.errors import oserror_name
from workers.failures import Failures
from workers.load import SENDING, Client
from workers.shm import CODE_MASK
from workers.stats import (
    BYTES_OUT,
    CONN_REUSED,
    REQ_LATE,
    REQ_SENT,
    SENDING_FLAG,
)

_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
LATE: Final = 0.001  # open loop: a request sent this long after its intended time is late


class Requests(Failures):
    """The request layer of the worker (see the module docstring)."""

    def _next(self, client: Client) -> None:
        """Issue ``client``'s next request, or retire it when a bound is reached."""
        if client.retire or self.stopping or self.issued >= self.issue_cap:
            client.state = load.DONE
            return
        if self.paused:
            client.state = load.PAUSED
            self.deadlines.arm(client, self.now + TICK)
            return
        self._issue(client, self.clock())

    def _fire_due(self, now: float) -> None:
        """Open loop: issue every request whose intended time has come."""
        sched = self.schedule
        assert sched is not None
        end = self.end_at
        while sched.next_at() <= now:
            if self.stopping or self.issued >= self.issue_cap:
                return
            if end and sched.next_at() >= end:
                return  # due at or after the end: not part of this run (the bound is exact)
            intended = sched.take()
            if self.in_flight >= self.max_outstanding:
                self.s[st.REQ_DROPPED] += 1  # counted, never silently skipped
                continue
            client = self.free.pop() if self.free else self._new_client()
            self._issue(client, intended)

    def _new_client(self) -> Client:
        client = Client(len(self.clients))
        self.clients.append(client)
        return client

    def _issue(self, client: Client, start: float) -> None:
        """Send a request for ``client``; its latency is measured from ``start`` (the
        intended time in open loop: coordinated omission corrected)."""
        self.issued += 1
        self.in_flight += 1
        client.start = start
        client.retried = False
        client.target = t = self._pick_target()
        state = self.w[self.targets[t].breaker_word]
        if state & CODE_MASK:  # not CLOSED: the slow path decides (shm.breaker_code, inline)
            verdict = self.shared.admit(t, state)
            if verdict == REFUSE:
                self._refuse(client)
                return
            client.trial = max(verdict, 0)
        else:
            client.trial = 0
        self._acquire(client)

    def _pick_target(self) -> int:
        if len(self.targets) == 1:
            return 0
        cur, weights = self.wrr, self.weights
        best = 0
        for i, weight in enumerate(weights):
            cur[i] += weight
            if cur[i] > cur[best]:
                best = i
        cur[best] -= sum(weights)
        return best

    def _acquire(self, client: Client) -> None:
        target = self.targets[client.target]
        pool = target.pool
        client.state = load.ACQUIRING
        while True:
            act, conn, until, reason = pool.checkout(self.now, client)
            if act is pl.USE:
                self._dispatch(client, conn)  # type: ignore[arg-type]
            elif act is pl.PROBE:
                dead = cx.probe_dead(conn.sock)  # type: ignore[union-attr]
                if dead:
                    self._close(conn, dead)  # type: ignore[arg-type]
                    continue
                self._dispatch(client, conn)  # type: ignore[arg-type]
            elif act is pl.EVICT:
                self._close(conn, reason)  # type: ignore[arg-type]
                continue
            elif act is pl.HEALTH:
                self._health_check(client, conn)  # type: ignore[arg-type]
            elif act is pl.CONNECT:
                client.state = SENDING
                self._connect(target, client)
            elif act is pl.WAIT:
                client.state = load.WAITING
                self.deadlines.arm(client, until)
            elif act is pl.BACKOFF:
                client.state = load.BACKOFF
                self.deadlines.arm(client, until)
            else:
                self._fail(client, "pool", reason, sent=False)
            return

    def _dispatch(self, client: Client, conn: Connection) -> None:
        """Reserve ``conn`` for ``client`` and send its request."""
        conn.fire("checkout")
        self._send(client, conn)

    def _send(self, client: Client, conn: Connection, draw: bool = True) -> None:
        """Send ``client``'s request on the RESERVED ``conn``: one ``send`` of the
        target's prebuilt bytes, then the read deadline."""
        target = self.targets[conn.target]
        s = self.s
        client.state = SENDING
        client.conn = conn
        conn.owner = client
        if self.schedule is not None:  # open loop only: uncorrected latency, lateness
            client.sent_at = now = self.clock()
            if now - client.start > LATE:
                s[REQ_LATE] += 1
        # One draw per request; a delayed request is not drawn again when it is sent.
        hit = None
        if self.inject_requests and draw:
            hit = self.injector.on_request(target.index, self.now)
        if hit is not None and hit[0] == "delay":
            self._count_injected("delay")
            client.state = load.DELAYED  # the connection stays RESERVED meanwhile
            self.deadlines.arm(client, self.now + hit[1] / 1000.0)
            return
        conn.reset_response(target.head_only)
        conn.fire("send")
        if conn.requests:
            s[CONN_REUSED] += 1
        self._write(conn, target.request)
        if hit is not None and self.conns.get(conn.fd) is conn:
            self._inject_after_send(conn, *hit)

    def _inject_after_send(self, conn: Connection, kind: str, param: int) -> None:
        """reset: abort with RST now; timeout: stop reading, so the read deadline fires
        (after ``param`` ms, or the configured read timeout when it is 0)."""
        self._count_injected(kind)
        conn.injected = kind
        if kind == "reset":
            cx.set_abortive(conn.sock)  # the close below sends RST, not FIN
            self._conn_failed(conn, "read", "ECONNRESET")
        else:
            self.ep.modify(conn.fd, 0)  # nothing is read from it any more
            if param:
                self.deadlines.arm(conn, self.now + param / 1000.0)

    def _write(self, conn: Connection, data: bytes) -> None:
        """Write a request (or a health check); the rest waits for writability.

        A request is counted sent *before* the ``send`` that writes its last byte,
        and taken back if that ``send`` fails or writes part of it; ``requests.sending``
        is 1 meanwhile. A worker killed right then leaves that one request counted
        and in doubt (``requests.in_doubt``), never uncounted (``poolsvc.ledger``).
        """
        s = self.s
        counted = conn.state is not CHECKING
        if counted:
            s[SENDING_FLAG] = 1
            s[REQ_SENT] += 1
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if counted:
                s[REQ_SENT] -= 1
                s[SENDING_FLAG] = 0
            self._conn_failed(conn, "write", oserror_name(exc))
            return
        if counted:
            if n < len(data):
                s[REQ_SENT] -= 1
            s[SENDING_FLAG] = 0
        s[BYTES_OUT] += n
        if n < len(data):
            self._write_later(conn, data, n)
        self.deadlines.arm(conn, self.now + self.settings.read_timeout)

    def _write_later(self, conn: Connection, data: bytes, n: int) -> None:
        """Only ``n`` bytes went out: the rest goes when the socket is writable."""
        conn.out = memoryview(data)[n:]
        self.ep.modify(conn.fd, _IN | _OUT)

    def _flush(self, conn: Connection) -> None:
        """The socket is writable: send the rest of a partly written request (counted
        sent as in :meth:`_write`)."""
        out = conn.out
        assert out is not None
        s = self.s
        counted = conn.state is not CHECKING
        if counted:
            s[SENDING_FLAG] = 1
            s[REQ_SENT] += 1
        try:
            n = conn.sock.send(out)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            if counted:
                s[REQ_SENT] -= 1
                s[SENDING_FLAG] = 0
            self._conn_failed(conn, "write", oserror_name(exc))
            return
        s[BYTES_OUT] += n
        if n < len(out):
            conn.out = out[n:]
            if counted:
                s[REQ_SENT] -= 1
        else:
            conn.out = None
            self.ep.modify(conn.fd, _IN)
        if counted:
            s[SENDING_FLAG] = 0

    def _health_check(self, client: Client, conn: Connection) -> None:
        """Send the target's health-check request on ``conn`` before ``client`` uses it."""
        target = self.targets[conn.target]
        conn.fire("checkout")
        conn.fire("check")
        client.state = SENDING
        client.conn = conn
        conn.owner = client
        conn.reset_response(target.health_head_only)
        self.s[st.HEALTH_CHECKS] += 1
        self._write(conn, target.health_request)
