"""One request on one host: admitted, sent, read, counted, its connection returned.

The order is the service's: the breaker admits (or refuses, ``breaker``), the
per-request faults draw (``delay``, ``reset``, ``timeout``: the same names, seeds
and streams as the service, :class:`workers.shared.injection.Injector`), the pool gives
a connection (``pool``, ``connect``, ``tls``), the request is written (``write``)
and its response read (``read``), then counted by status (a status outside
``success_statuses`` is ``failed.status_4xx`` ... in the counters, but still a
:class:`Response` to the caller, who may ``raise_for_status()``).

A reused connection that turns out dead before any byte of the response (the
stale keep-alive race: the server closed it as we sent) is discarded and an
idempotent request re-sent once on a fresh connection (``retries.stale_reuse``);
any other failure closes the connection, is counted by phase and name, and raises.
"""

from __future__ import annotations

import time
from typing import Any, Final

import httptools

from poolsvc.library.exceptions import ClientError, error_for
from poolsvc.library.hostpool import REMOTE_PHASES, HostPool, Timeout
from poolsvc.library.reader import MAX_HEADER_BYTES, Reader
from poolsvc.library.wire import recv_some, send_all
from workers.net.httpwire import close_delimited
from workers.pool.connection import ON, BadStatus, Connection, Unsolicited

_SEND: Final = ON["send"]
_DONE: Final = ON["done"]
_STALE: Final = frozenset({"ECONNRESET", "EPIPE", "early_eof"})


class Exchange:
    """A request in progress on ``host`` (see the module docstring). After
    :meth:`run` returns, the body may still be coming: :meth:`read_more` pulls it,
    and the connection goes back when the response is complete (or is closed by
    :meth:`abandon`)."""

    __slots__ = ("conn", "data", "head_only", "host", "idempotent", "reader", "started",
                 "success", "timeout", "trial")  # fmt: skip

    def __init__(self, host: HostPool, data: bytes, head_only: bool, idempotent: bool,
                 timeout: Timeout, success: bytes) -> None:  # fmt: skip
        self.host, self.data, self.head_only = host, data, head_only
        self.idempotent, self.timeout, self.success = idempotent, timeout, success
        self.conn: Connection | None = None
        self.reader: Reader | None = None
        self.started = 0.0
        self.trial = 0

    def run(self) -> Reader:
        """Send the request and read the response's head; raises a ClientError."""
        host = self.host
        self.started = now = time.monotonic()
        self.trial = host.admit(now)
        inj = host.injector
        fault = inj.on_request(host.index, now) if inj is not None and inj.requests else None
        retried = False
        while True:
            try:
                conn, reused = host.checkout(self.timeout, fresh=retried)
            except ClientError as exc:
                self._fail(exc, False, "connect_fail" if exc.phase == "injected" else "")
                raise
            self.conn = conn
            try:
                return self._exchange(conn, reused, fault)
            except _Stale as stale:
                if retried or not self.idempotent:
                    err = error_for("read", "early_eof", "the reused connection was closed")
                    self._fail(err, True, "")
                    raise err from None
                retried = True
                with host.lock:
                    host.meter.stale(stale.sent)
                host.discard(conn, "error")

    def _exchange(self, conn: Connection, reused: bool, fault: Any) -> Reader:
        host, timeout = self.host, self.timeout
        kind = fault[0] if fault else ""
        if kind == "delay":
            time.sleep(fault[1] / 1000.0)
        conn.state = _SEND[conn.state]
        try:
            send_all(conn, self.data, timeout.read)
        except ClientError as exc:
            if reused and exc.name in _STALE:
                raise _Stale(False) from None
            self._failed_on(conn, exc, False, "")
            raise
        with host.lock:
            host.meter.sent(len(self.data), reused)
        if kind == "reset":
            host.transport.reset(conn.sock)
            err = error_for("read", "ECONNRESET", "injected reset", injected=True)
            self._failed_on(conn, err, True, "reset")
            raise err
        if kind == "timeout":
            time.sleep((fault[1] or timeout.read * 1000.0) / 1000.0)
            err = error_for("read", "read_timeout", "injected timeout", injected=True)
            self._failed_on(conn, err, True, "timeout")
            raise err
        reader = self.reader = Reader(conn, self.head_only)
        first = True
        while not reader.head_done and not conn.complete:
            self._read(reader, first, reused)
            first = False
            if not reader.head_done and len(conn.head or b"") > MAX_HEADER_BYTES:
                err = error_for("read", "header_too_large", f"over {MAX_HEADER_BYTES} bytes")
                self._failed_on(conn, err, True, "")
                raise err
        if conn.complete:
            self._done()
        return reader

    def _read(self, reader: Reader, first: bool, reused: bool = False) -> None:
        """One read of the response, fed to the parser; settles EOF and parse errors."""
        conn = reader.conn
        try:
            data = recv_some(conn, self.timeout.read, first)
        except ClientError as exc:
            if reused and not reader.received and exc.name in _STALE:
                raise _Stale(True) from None
            self._failed_on(conn, exc, True, "")
            raise
        if not data:
            if reused and not reader.received:
                raise _Stale(True)
            if conn.status and conn.head and close_delimited(conn.head):
                conn.keep_alive = False  # the body ended when the server closed
                conn.complete = True
                return
            err = error_for("read", "early_eof", "the server closed before the response ended")
            self._failed_on(conn, err, True, "")
            raise err
        try:
            reader.feed(data)
        except Unsolicited:
            conn.keep_alive = False  # a second response nobody asked for: not reusable
        except (httptools.HttpParserUpgrade, httptools.HttpParserError, BadStatus):
            name = "unexpected_upgrade" if conn.status == 101 else "protocol_error"
            err = error_for("read", name, "the response is not HTTP/1.1 as sent")
            self._failed_on(conn, err, True, "")
            raise err from None
        finally:
            with self.host.lock:
                self.host.meter.received(len(data))

    def read_more(self) -> bool:
        """Read more of the body (into ``reader.chunks``); False once it is complete."""
        reader, conn = self.reader, self.conn
        if reader is None or conn is None or self.conn is None or conn.complete:
            return False
        self._read(reader, False)
        if conn.complete:
            self._done()
            return False
        return True

    def _done(self) -> None:
        """The response is complete: count it, give its connection back."""
        conn, host = self.conn, self.host
        assert conn is not None
        self.conn = None
        now = time.monotonic()
        status = conn.status
        good = bool(self.success[status])
        with host.lock:
            host.meter.response(status, now - self.started, good)
            conn.requests += 1
            host.outcome(now, status < 500, self.trial)
        conn.state = _DONE[conn.state]
        host.checkin(conn, conn.keep_alive)

    def abandon(self) -> None:
        """The caller stopped reading before the end: the connection cannot be reused."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.host.discard(conn, "error")

    def _failed_on(self, conn: Connection, exc: ClientError, sent: bool, fault: str) -> None:
        self.conn = None
        self.host.discard(conn, "error")
        self._fail(exc, sent, fault)

    def _fail(self, exc: ClientError, sent: bool, fault: str) -> None:
        host = self.host
        now = time.monotonic()
        with host.lock:
            host.meter.failed(exc.phase, exc.name, sent, now - self.started, fault)
            if exc.phase in REMOTE_PHASES:
                host.outcome(now, False, self.trial)


class _Stale(Exception):
    """A reused connection was dead before any byte of the response (``sent``: the
    request had been written whole)."""

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self.sent = sent
