"""The transport: every operation on a pooled socket goes through here.

The worker never calls a socket method itself: it opens, connects, probes and
closes through a :class:`Transport`, and reads and writes through the two
callables the transport hands each connection (:meth:`Transport.streams`).
:class:`Plain` is TCP; a TLS transport is a second implementation of the same
protocol (its ``connected`` drives the handshake, its streams wrap the TLS
object), and the request path does not change.

Where speed shaped this: the streams of :class:`Plain` are the socket's own bound
``send`` and ``recv``, so a request pays no call through this module (a call of
``conn.send(data)`` costs what ``conn.sock.send(data)`` did).

``connect`` is non-blocking: ``EINPROGRESS``, writability, then ``SO_ERROR``; a
socket is never reported connected before ``SO_ERROR == 0``.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

Send = Callable[[Any], int]  # bytes or a memoryview in; bytes written out
Recv = Callable[[int], bytes]

DEADLINE: Final = -1  # connect_blocking: our deadline passed (not the kernel's ETIMEDOUT)
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_PENDING: Final = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EINTR, errno.EAGAIN})


class Transport(Protocol):
    """How the worker talks over a socket (see the module docstring)."""

    name: str
    handshakes: bool  # a handshake follows the TCP connect (wrap, then handshake)

    def open(self, family: int) -> socket.socket:
        """A new non-blocking socket; raises OSError."""
        ...

    def connect(self, sock: socket.socket, addr: tuple[Any, ...]) -> int:
        """Begin connecting: 0, EINPROGRESS, or the errno of a failure."""
        ...

    def connected(self, sock: socket.socket) -> int:
        """After writability: 0 ready for requests, EINPROGRESS not yet, else the errno."""
        ...

    def wrap(self, sock: socket.socket) -> tuple[socket.socket, bool]:
        """After the TCP connect: the socket the connection uses from now on, and
        whether it offers a saved session (TLS)."""
        ...

    def handshake(self, sock: Any) -> int:
        """One step of the handshake: 0 done, else what it waits for (workers.net.tls)."""
        ...

    def streams(self, sock: socket.socket) -> tuple[Send, Recv]:
        """The connection's ``send`` and ``recv`` (raising BlockingIOError when not ready)."""
        ...

    def probe(self, sock: socket.socket) -> str:
        """Zero-wait check of an idle socket: '' if usable, else the eviction reason."""
        ...

    def reset(self, sock: socket.socket) -> None:
        """Make the next close send RST instead of FIN."""
        ...

    def shut(self, sock: socket.socket) -> None:
        """FIN to the peer and EOF to us, the descriptor left open."""
        ...

    def close(self, sock: socket.socket, notify: bool = False) -> None:
        """Close the socket (never raises); ``notify``: we end the conversation, the
        peer did not (TLS sends close_notify then)."""
        ...


class Plain:
    """TCP, no TLS."""

    name = "tcp"
    handshakes = False

    def open(self, family: int) -> socket.socket:
        return open_socket(family)

    def connect(self, sock: socket.socket, addr: tuple[Any, ...]) -> int:
        return start_connect(sock, addr)

    def connected(self, sock: socket.socket) -> int:
        return connect_result(sock)

    def wrap(self, sock: socket.socket) -> tuple[socket.socket, bool]:
        return sock, False

    def handshake(self, sock: Any) -> int:
        return 0

    def streams(self, sock: socket.socket) -> tuple[Send, Recv]:
        return sock.send, sock.recv

    def probe(self, sock: socket.socket) -> str:
        return probe_dead(sock)

    def reset(self, sock: socket.socket) -> None:
        set_abortive(sock)

    def shut(self, sock: socket.socket) -> None:
        shut(sock)

    def close(self, sock: socket.socket, notify: bool = False) -> None:
        sock.close()

    def __repr__(self) -> str:
        return "<Transport tcp>"


class Tuned:
    """A transport as a different client would use it, for the Nagle study: Nagle's
    algorithm left on (``nodelay`` False) and/or each request's head and body
    written apart (``split``: the first write stops at the end of the head, and the
    send path writes the rest when it next can, as a client that writes headers
    then body does). Everything else is the inner transport's."""

    def __init__(self, inner: Transport, nodelay: bool, split: bool) -> None:
        self.inner, self.nodelay, self.split = inner, nodelay, split
        self.name, self.handshakes = inner.name, inner.handshakes

    def open(self, family: int) -> socket.socket:
        sock = self.inner.open(family)
        if not self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        return sock

    def connect(self, sock: socket.socket, addr: tuple[Any, ...]) -> int:
        return self.inner.connect(sock, addr)

    def connected(self, sock: socket.socket) -> int:
        return self.inner.connected(sock)

    def wrap(self, sock: socket.socket) -> tuple[socket.socket, bool]:
        return self.inner.wrap(sock)

    def handshake(self, sock: Any) -> int:
        return self.inner.handshake(sock)

    def streams(self, sock: socket.socket) -> tuple[Send, Recv]:
        send, recv = self.inner.streams(sock)
        if not self.split:
            return send, recv

        def send_head_first(data: Any) -> int:
            view = memoryview(data)
            end = bytes(view[:8192]).find(b"\r\n\r\n")
            if 0 <= end < len(view) - 4:  # a head with something after it: the head alone
                return send(view[: end + 4])
            return send(view)

        return send_head_first, recv

    def probe(self, sock: socket.socket) -> str:
        return self.inner.probe(sock)

    def reset(self, sock: socket.socket) -> None:
        self.inner.reset(sock)

    def shut(self, sock: socket.socket) -> None:
        self.inner.shut(sock)

    def close(self, sock: socket.socket, notify: bool = False) -> None:
        self.inner.close(sock, notify)

    def __repr__(self) -> str:
        return f"<Transport {self.name} nodelay={self.nodelay} split={self.split}>"


# Socket primitives -------------------------------------------------------------


def open_socket(family: int) -> socket.socket:
    """A non-blocking TCP socket with Nagle off (requests are single small writes)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def start_connect(sock: socket.socket, addr: tuple[Any, ...]) -> int:
    """Begin a non-blocking connect; returns 0, EINPROGRESS, or the errno of a failure."""
    err = sock.connect_ex(addr)
    return errno.EINPROGRESS if err in _PENDING else err


def connect_result(sock: socket.socket) -> int:
    """After writability: 0 when connected, EINPROGRESS if the wakeup was spurious,
    else the errno the handshake failed with (``SO_ERROR``)."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return errno.EINPROGRESS if err in _PENDING else err


def probe_dead(sock: socket.socket) -> str:
    """Zero-wait check of an idle socket: '' if it may carry a request, else the
    eviction reason: ``validation`` (FIN or RST) or ``unsolicited`` (bytes nobody
    asked for). Either way the connection must not carry a request."""
    try:
        peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return ""
    except OSError:
        return "validation"
    return "unsolicited" if peeked else "validation"


def set_abortive(sock: socket.socket) -> None:
    """Make the next close send RST instead of FIN (SO_LINGER on, timeout 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass


def shut(sock: socket.socket) -> None:
    """Shut both directions without closing the descriptor (FIN to the peer, EOF to us)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def connect_blocking(
    family: int, addr: tuple[Any, ...], timeout: float
) -> tuple[int, socket.socket | None]:
    """One connect with a deadline, by the same non-blocking path the loop uses.

    Returns ``(0, sock)`` on success (the caller owns ``sock``), else ``(err, None)``
    where ``err`` is the errno, or :data:`DEADLINE` when the deadline passed first.
    """
    sock = open_socket(family)
    err = start_connect(sock, addr)
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    while err == errno.EINPROGRESS:
        left = deadline - time.monotonic()
        if left <= 0:
            sock.close()
            return DEADLINE, None
        if poller.poll(left * 1000.0):
            err = connect_result(sock)
    if err:
        sock.close()
        return err, None
    return 0, sock
