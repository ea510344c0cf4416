"""Blocking steps over the service's non-blocking connections: dial, write, read.

The library's calls block; its sockets do not. Each step runs the same
non-blocking operation the worker's loop runs (through the target's
:class:`workers.net.transport.Transport`: connect, ``SO_ERROR``, the TLS handshake by
want-read/want-write, the connection's ``send``/``recv`` streams) and, where the
loop would return to epoll, waits in ``poll(2)`` on that one descriptor until its
deadline. A connection's ``owner`` (the service's "request it is reserved for")
holds its poll object here: made once, registered once.

Every failure raises the library's exception for the phase and counter name the
service would count (:func:`poolsvc.library.exceptions.error_for`).

Where speed shaped this: after a request is written, the first read waits in
``poll`` before it calls ``recv`` (on loopback the answer is never already there,
so trying first would cost a failing ``recv`` per request).
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final

from poolsvc.library.exceptions import ClientError, error_for
from workers.net.tls import WANT_READ
from workers.net.transport import Transport
from workers.pool.connection import Connection
from workers.shared.errors import errno_name, oserror_name, tls_detail, tls_name
from workers.shared.meter import Meter

POLLIN: Final = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
POLLOUT: Final = select.POLLOUT | select.POLLERR | select.POLLHUP
RECV_SIZE: Final = 65536


@dataclass(slots=True)
class Dialed:
    """A connection just made, and what it cost (seconds): the TCP connect and the
    TLS handshake (0 without TLS); whether a session was offered and resumed."""

    conn: Connection
    connect_s: float
    tls_s: float = 0.0
    offered: bool = False
    resumed: bool = False


def _wait(sock: Any, events: int, deadline: float) -> bool:
    """Wait until ``sock`` is ready for ``events`` or ``deadline`` passes (False)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), events)
    return bool(poller.poll(left * 1000.0 + 0.5))


def dial(
    transport: Transport,
    family: int,
    addr: tuple[Any, ...],
    connect_timeout: float,
    tls_timeout: float,
    index: int,
    meter: Meter,
    injected: bool = False,
) -> Dialed:
    """One connection to ``addr`` (``index``: its host's ordinal; ``meter``: the host's,
    for interim responses). Raises ConnectError, ConnectTimeout or TLSError;
    never leaves a descriptor behind when it raises."""
    try:
        sock = transport.open(family)
    except OSError as exc:
        raise error_for("connect", oserror_name(exc), str(exc), injected) from None
    started = time.monotonic()
    try:
        err = transport.connect(sock, addr)
        while err == errno.EINPROGRESS:
            if not _wait(sock, POLLOUT, started + connect_timeout):
                raise error_for("connect", "connect_timeout", f"after {connect_timeout:g}s",
                                injected)  # fmt: skip
            err = transport.connected(sock)
        if err:
            raise error_for("connect", errno_name(err), errno.errorcode.get(err, str(err)),
                            injected)  # fmt: skip
        connected = time.monotonic()
        if not transport.handshakes:
            conn = Connection(sock, index, meter, transport.streams(sock))
            conn.fire("connected")
            return Dialed(conn, connected - started)
        sock, offered = transport.wrap(sock)
        _handshake(transport, sock, connected + tls_timeout)
        conn = Connection(sock, index, meter, transport.streams(sock))
        conn.fire("secure")
        conn.fire("secured")
        resumed = bool(getattr(sock, "session_reused", False))
        return Dialed(conn, connected - started, time.monotonic() - connected, offered, resumed)
    except BaseException:
        transport.close(sock)
        raise


def _handshake(transport: Transport, sock: Any, deadline: float) -> None:
    while True:
        try:
            want = transport.handshake(sock)
        except ssl.SSLError as exc:
            raise error_for("tls", tls_name(exc), tls_detail(exc)) from None
        except OSError as exc:
            raise error_for("tls", oserror_name(exc), str(exc)) from None
        if not want:
            return
        if not _wait(sock, POLLIN if want == WANT_READ else POLLOUT, deadline):
            raise error_for("tls", "tls_handshake_timeout", "the TLS handshake took too long")


def poller(conn: Connection) -> Any:
    """The connection's poll object (registered for reading), made on first use."""
    p = conn.owner
    if p is None:
        conn.owner = p = select.poll()
        p.register(conn.fd, POLLIN)
    return p


def send_all(conn: Connection, data: bytes, timeout: float) -> None:
    """Write all of ``data``; raises WriteError (ETIMEDOUT after ``timeout`` without
    progress, or the errno)."""
    send = conn.send
    view: memoryview | bytes = data
    while view:
        try:
            n = send(view)
        except BlockingIOError:  # (TLS: retried with the same bytes, as OpenSSL asks)
            if not _wait(conn.sock, POLLOUT, time.monotonic() + timeout):
                raise error_for(
                    "write", "ETIMEDOUT", f"no room to write for {timeout:g}s"
                ) from None
            continue
        except OSError as exc:
            raise error_for("write", oserror_name(exc), str(exc)) from None
        if n == len(view):
            return
        view = memoryview(view)[n:]


def recv_some(conn: Connection, timeout: float, wait_first: bool) -> bytes:
    """The next bytes from ``conn`` (b"" at EOF), waiting up to ``timeout`` seconds
    for them; raises ReadTimeout, or ReadError with the errno."""
    recv = conn.recv
    if wait_first and not poller(conn).poll(timeout * 1000.0):
        raise error_for("read", "read_timeout", f"no response byte for {timeout:g}s")
    while True:
        try:
            return recv(RECV_SIZE)
        except BlockingIOError:
            if not poller(conn).poll(timeout * 1000.0):
                raise error_for("read", "read_timeout", f"no byte for {timeout:g}s") from None
        except ClientError:
            raise
        except OSError as exc:
            raise error_for("read", oserror_name(exc), str(exc)) from None


def resolve(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, address) of ``host``: the first the resolver gives for TCP; raises
    ConnectError (EOTHER, with the resolver's message)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise error_for("connect", "EOTHER", f"cannot resolve {host!r}: {exc}") from None
    family, _, _, _, addr = infos[0]
    return family, addr
