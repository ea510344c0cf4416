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

from workers import connection as cx
from workers import load, shm
from workers import pool as pl
from workers.connection import CHECKING, CLOSED, READING, Connection
from workers.errors import ERROR_INDEX, oserror_name
from workers.histogram import bucket_of
from workers.http import close_delimited, final_head
from workers.load import Client
from workers.requests import Requests
from workers.shm import CODE_MASK
from workers.stats import (
    BYTES_IN,
    BYTES_OUT,
    CONN_REUSED,
    HIST2_BASE,
    HIST_BASE,
    LAT2_MAX,
    LAT_MAX,
    LAT_SUM,
    REQ_FAILED,
    REQ_OK,
    REQ_SENT,
    SENDING_FLAG,
    STATUS_BASE,
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
            self._read_ended(conn, data)
            return
        n = len(data)
        self.s[BYTES_IN] += n
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
                self._response_done(conn, "unsolicited")  # bytes after a HEAD response
            else:
                self._response_done(conn)

    def _parse_failed(self, conn: Connection) -> None:
        """httptools stopped: a second response began (desync), a 101, or garbage."""
        if conn.complete:  # the response was whole; what followed it nobody asked for
            self._response_done(conn, "unsolicited")
        elif conn.status == 101:
            self._conn_failed(conn, "read", "unexpected_upgrade")
        else:
            self._conn_failed(conn, "read", "protocol_error")

    def _head_too_large(self, conn: Connection) -> bool:
        """Fail the request if its header block (interim responses included) passed
        ``max_header_bytes``; the connection is closed, its rest never read."""
        head = conn.head or b""
        _start, end = final_head(head)
        if (end if end >= 0 else len(head)) <= self.max_head:
            return False
        self._conn_failed(conn, "read", "header_too_large")
        return True

    def _read_ended(self, conn: Connection, data: bytes) -> None:
        """EOF on a connection, or bytes on one that is not waiting for a response."""
        if conn.state not in READING:  # idle (or reserved): FIN, RST or bytes nobody asked for
            if data and not conn.requests:  # a target that talks first: do not reconnect at once
                self.targets[conn.target].pool.backoff.failure(self.now)
            self._close(conn, "unsolicited" if data else "peer_closed")
        elif conn.status and not conn.complete and conn.head and close_delimited(conn.head):
            conn.keep_alive = False
            self._response_done(conn)
        else:
            self._read_failed(conn, "early_eof")

    def _response_done(self, conn: Connection, evict: str = "") -> None:
        """Count a complete response, then keep, check in or close its connection
        (``evict``: close it for this reason whatever the response said)."""
        client: Client = conn.owner
        self.now = now = self.clock()
        conn.deadline = 0.0  # disarmed (see workers.timers: its heap entry dies lazily)
        if conn.state is CHECKING:
            self._health_done(client, conn, evict)
            return
        s = self.s
        conn.requests += 1
        self.in_flight -= 1
        us = int((now - client.start) * 1_000_000)
        status = conn.status
        s[STATUS_BASE + status] += 1
        s[LAT_SUM] += us
        if us > s[LAT_MAX]:
            s[LAT_MAX] = us
        bucket = bucket_of(us)
        s[HIST_BASE + bucket] += 1
        if self.schedule is not None:  # open loop: also from the actual send (uncorrected)
            raw = int((now - client.sent_at) * 1_000_000)
            s[HIST2_BASE + bucket_of(raw)] += 1
            if raw > s[LAT2_MAX]:
                s[LAT2_MAX] = raw
        target = self.targets[conn.target]
        good = self.success[status]
        if good:
            s[REQ_OK] += 1
        else:
            s[REQ_FAILED] += 1
            name = (
                "status_5xx" if status >= 500 else "status_4xx" if status >= 400 else "status_other"
            )
            self._count_error("status", name, True)
        if target.own:  # several targets: this target's own figures too
            self.w[target.block + (shm.T_RESP_OK if good else shm.T_RESP_FAILED)] += 1
            self.w[target.hist + bucket] += 1
            if not good:
                self.w[target.errors + ERROR_INDEX[name]] += 1
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
        if state is CLOSED or evict:  # it was DRAINING, or must not carry another request
            conn.owner = client.conn = None
            self._close(conn, evict)
        elif (
            self.keeping
            and conn.keep_alive
            and not client.retire
            and self.issued < self.issue_cap
            and not self.w[target.breaker_word] & CODE_MASK  # CLOSED (inline breaker_code)
            and target.pool.renew(conn, now)
        ):
            # Closed loop, one target: the client keeps the connection it just used (the
            # pair stays linked, client.conn and conn.owner) and its next request goes
            # out once this wakeup's responses are all read.
            conn.state = _CHECKOUT[state]
            self.issued += 1
            self.in_flight += 1
            client.retried = False
            client.trial = 0
            self.renewed.append(client)
            return
        else:
            conn.owner = client.conn = None
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
        with the reuse and byte counters added once for the whole burst. ``requests.sent``
        is stored for each request, before its send (see :meth:`_write`).
        """
        queued, self.renewed = self.renewed, []
        clock = self.clock
        if self.inject_requests:  # every request draws for the faults: the full path
            for client in queued:
                client.start = clock()
                self._send(client, client.conn)
            return
        data = self.targets[0].request
        size = len(data)
        deadline = self.now + self.settings.read_timeout
        arm = self.deadlines.arm
        s = self.s
        sent = s[REQ_SENT]
        whole = 0
        # Each request is counted sent before its send (taken back if the send fails or
        # is partial), with `sending` set for the whole burst: a worker killed inside
        # the burst leaves at most its last counted request in doubt (poolsvc.ledger).
        s[SENDING_FLAG] = 1
        for client in queued:
            conn = client.conn  # still linked both ways, the client still SENDING
            conn.complete = False  # reset_response, inline (head_only has not changed,
            conn.status = 0  # and keep_alive is read from each response)
            conn.head = None
            conn.state = _SEND[conn.state]
            client.start = clock()
            sent += 1
            s[REQ_SENT] = sent
            try:
                n = conn.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                s[REQ_SENT] = sent - 1
                self._conn_failed(conn, "write", oserror_name(exc))
                sent = s[REQ_SENT]  # the failure path may have sent a request itself
                s[SENDING_FLAG] = 1
                continue
            if n == size:
                whole += 1
            else:
                sent -= 1
                s[REQ_SENT] = sent
                s[BYTES_OUT] += n
                self._write_later(conn, data, n)
            if conn.heap_when and deadline >= conn.heap_when:
                conn.deadline = deadline  # its earlier heap entry re-arms it (timers: lazy)
            else:
                arm(conn, deadline)
        s[SENDING_FLAG] = 0
        s[CONN_REUSED] += len(queued)
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

    def _health_done(self, client: Client, conn: Connection, evict: str) -> None:
        if 200 <= conn.status < 400 and conn.keep_alive and not evict:
            conn.fire("done")
            self._send(client, conn)
            return
        self._close(conn, evict or "health_check", refill=False)
        self._reconnect(client)  # at most one failed check per request: then a fresh socket
