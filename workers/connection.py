"""A pooled keep-alive connection: its state table and its socket primitives.

Every state is named, transient ones included, and every legal move is a cell
of :data:`TRANSITIONS`; :meth:`Connection.fire` (or, on the request path, the
same table by event, :data:`ON`) is the only code that changes ``state``, and it
refuses any move the table lacks (an implied state is how pools
lose track of connections, cf. httpcore #1110).

    CONNECTING --connected--> IDLE --checkout--> RESERVED --send--> BUSY --done--> IDLE
                                                 RESERVED --check--> CHECKING --done--> RESERVED
                                                 RESERVED --release--> IDLE
                                                                     BUSY --drain--> DRAINING
                                                                     DRAINING --done--> CLOSED
    any state but CLOSED --close--> CLOSED

``RESERVED`` is the moment between checkout and the first byte written (the
readability probe runs there); ``CHECKING`` is an active health-check request in
flight; ``DRAINING`` finishes the response in flight and then closes.

The socket helpers at the bottom are the only place that calls ``connect``:
non-blocking, ``EINPROGRESS``, writability, then ``SO_ERROR`` -- a socket is
never reported connected before ``SO_ERROR == 0``.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from typing import Any, Final

import httptools

from workers.stats import INTERIM

CONNECTING: Final = "CONNECTING"
IDLE: Final = "IDLE"
RESERVED: Final = "RESERVED"
BUSY: Final = "BUSY"
CHECKING: Final = "CHECKING"
DRAINING: Final = "DRAINING"
CLOSED: Final = "CLOSED"
STATES: Final = (CONNECTING, IDLE, RESERVED, BUSY, CHECKING, DRAINING, CLOSED)
READING: Final = frozenset({BUSY, CHECKING, DRAINING})  # a response is on its way

# Plain strings, not Enum members: they are dict keys on the hot path and
# str hashes are cached, Enum.__hash__ is a Python call.
TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    CONNECTING: {"connected": IDLE, "close": CLOSED},
    IDLE: {"checkout": RESERVED, "close": CLOSED},
    RESERVED: {"send": BUSY, "check": CHECKING, "release": IDLE, "close": CLOSED},
    CHECKING: {"done": RESERVED, "close": CLOSED},
    BUSY: {"done": IDLE, "drain": DRAINING, "close": CLOSED},
    DRAINING: {"done": CLOSED, "close": CLOSED},
    CLOSED: {},
}


class InvalidTransition(RuntimeError):
    """A move that the state table does not allow: a bug in the caller."""


class _Moves(dict[str, str]):
    """One event's column of the table: state -> next state; refuses a missing move."""

    def __init__(self, event: str) -> None:
        super().__init__({st: row[event] for st, row in TRANSITIONS.items() if event in row})
        self.event = event

    def __missing__(self, state: str) -> str:
        raise InvalidTransition(f"no transition from {state} on {self.event!r}")


# The table by event, for the request path: ``conn.state = ON["send"][conn.state]``
# is the move ``fire("send")`` makes, without a method call per request.
ON: Final[dict[str, _Moves]] = {
    e: _Moves(e) for e in sorted({e for r in TRANSITIONS.values() for e in r})
}


class Unsolicited(Exception):
    """A response began after the one we were reading was complete (raised from the
    parser callback, so parsing stops there: those bytes are never counted)."""


class BadStatus(Exception):
    """A final status code outside 100-599: not an HTTP/1.x response."""


class Connection:
    """One socket to one target, with the httptools parser reading its responses.

    The connection is the parser's protocol object: httptools calls
    :meth:`on_message_begin`, :meth:`on_headers_complete` and
    :meth:`on_message_complete` on it. Interim responses (1xx other than 101) are
    skipped and counted in ``slot[INTERIM]``; the final response that follows them
    is the one that completes the request.
    """

    complete: bool
    head: bytes | bytearray | None  # the response bytes read before its headers were complete
    head_only: bool
    keep_alive: bool
    status: int

    __slots__ = (
        "complete",
        "created",
        "deadline",
        "drawn",
        "expires",
        "fd",
        "head",
        "head_only",
        "heap_when",
        "injected",
        "inode",
        "keep_alive",
        "last_used",
        "out",
        "owner",
        "parser",
        "requests",
        "slot",
        "sock",
        "state",
        "status",
        "target",
    )

    def __init__(self, sock: socket.socket, target: int, slot: Any = None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.target = target
        self.slot = slot  # the worker's stats slot: interim responses are counted there
        self.state = CONNECTING
        self.parser = httptools.HttpResponseParser(self)
        self.created = self.last_used = self.expires = 0.0
        self.deadline = self.heap_when = 0.0
        self.requests = 0
        self.owner: Any = None  # the request this connection is reserved for, if any
        self.out: memoryview | None = None  # unsent tail of the request
        self.injected = ""  # the fault that hit this connection, if any
        self.inode = 0  # the socket's inode (for the FD audit's tombstones)
        self.drawn = -1  # fault-table generation this idle connection last drew for
        self.reset_response(False)

    def fire(self, event: str) -> str:
        """Apply ``event`` to the state table; returns the new state."""
        try:
            self.state = new = TRANSITIONS[self.state][event]
        except KeyError:
            raise InvalidTransition(f"{self!r}: no transition on {event!r}") from None
        return new

    def reset_response(self, head_only: bool) -> None:
        """Prepare to read the next response (``head_only``: it answers a HEAD)."""
        self.complete = False
        self.status = 0
        self.head = None
        self.head_only = head_only
        self.keep_alive = True

    # httptools callbacks -------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request: a desync, stop here
            raise Unsolicited

    def on_headers_complete(self) -> None:
        self.status = status = self.parser.get_status_code()
        if self.head_only and status >= 200:
            self.keep_alive = self.parser.should_keep_alive()
            # A HEAD response has no body whatever Content-Length says, and llhttp
            # cannot be told so: end the message here and start a fresh parser.
            self.complete = True
            self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        status = self.status
        if 200 <= status < 600:
            if not self.complete:  # (a HEAD response completed at its headers)
                # Read keep-alive here: once feed_data returns, llhttp has reset for
                # the next message and should_keep_alive() no longer describes this one.
                self.keep_alive = self.parser.should_keep_alive()
                self.complete = True
        elif 100 <= status < 200 and status != 101:  # interim: the final response follows
            self.slot[INTERIM] += 1
            self.status = 0
        elif status != 101:  # (101: the parser raises HttpParserUpgrade right after this)
            raise BadStatus(status)

    def __repr__(self) -> str:
        return (
            f"<Connection fd={self.fd} {self.state} target={self.target} "
            f"requests={self.requests} status={self.status} complete={self.complete}>"
        )


# Socket primitives -------------------------------------------------------------

DEADLINE: Final = -1  # connect_blocking: our deadline passed (not the kernel's ETIMEDOUT)
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_PENDING: Final = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EINTR, errno.EAGAIN})


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


def abort(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    set_abortive(sock)
    sock.close()


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


class DeadEnds:
    """Loopback addresses where a connect really fails, for the connect_fail fault.

    ``refusing``: a port that is bound but not listening, so connects get RST
    (ECONNREFUSED) and no other process can take it over.  ``silent``: a listener
    with a backlog of 0 whose queue one connection already fills; further SYNs are
    dropped and the connect times out.  Created on first use, one set per address
    family, owned (and closed) by the worker.
    """

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._addrs: dict[tuple[int, str], tuple[Any, ...]] = {}

    def address(self, family: int, mode: str) -> tuple[Any, ...]:
        key = (family, mode)
        if key not in self._addrs:
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
            first = socket.socket(family, socket.SOCK_STREAM)
            first.bind((host, 0))
            self.sockets.append(first)
            if mode == "silent":
                first.listen(0)
                filler = socket.create_connection(first.getsockname()[:2])
                self.sockets.append(filler)
            self._addrs[key] = first.getsockname()
        return self._addrs[key]

    def fds(self) -> set[int]:
        return {s.fileno() for s in self.sockets}

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()
        self._addrs.clear()
