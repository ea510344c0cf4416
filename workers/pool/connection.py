"""A pooled keep-alive connection: its state table and its response parser.

Every state is named, transient ones included, and every legal move is a cell
of :data:`TRANSITIONS`; :meth:`Connection.fire` (or, on the request path, the
same table by event, :data:`ON`) is the only code that changes ``state``, and it
refuses any move the table lacks (an implied state is how pools
lose track of connections, cf. httpcore #1110).

    CONNECTING --connected--> IDLE --checkout--> RESERVED --send--> BUSY --done--> IDLE
    CONNECTING --secure--> HANDSHAKING --secured--> IDLE          (TLS)
                                                 RESERVED --check--> CHECKING --done--> RESERVED
                                                 RESERVED --release--> IDLE
                                                                     BUSY --drain--> DRAINING
                                                                     DRAINING --done--> CLOSED
    any state but CLOSED --close--> CLOSED

``HANDSHAKING`` is a TLS handshake after the TCP one, with its own deadline;
``RESERVED`` is the moment between checkout and the first byte written (the
readability probe runs there); ``CHECKING`` is an active health-check request in
flight; ``DRAINING`` finishes the response in flight and then closes.

A connection reads and writes through the ``send`` and ``recv`` its transport
gave it (:mod:`workers.net.transport`), never through its socket.
"""

from __future__ import annotations

import socket
from typing import Any, Final

import httptools

from workers.net.transport import Recv, Send
from workers.shared import statetable as table
from workers.shared.meter import Meter
from workers.shared.statetable import InvalidTransition as InvalidTransition

CONNECTING: Final = "CONNECTING"
HANDSHAKING: Final = "HANDSHAKING"
IDLE: Final = "IDLE"
RESERVED: Final = "RESERVED"
BUSY: Final = "BUSY"
CHECKING: Final = "CHECKING"
DRAINING: Final = "DRAINING"
CLOSED: Final = "CLOSED"
STATES: Final = (CONNECTING, HANDSHAKING, IDLE, RESERVED, BUSY, CHECKING, DRAINING, CLOSED)
OPENING: Final = frozenset({CONNECTING, HANDSHAKING})  # not yet usable
READING: Final = frozenset({BUSY, CHECKING, DRAINING})  # a response is on its way

TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    CONNECTING: {"connected": IDLE, "secure": HANDSHAKING, "close": CLOSED},
    HANDSHAKING: {"secured": IDLE, "close": CLOSED},
    IDLE: {"checkout": RESERVED, "close": CLOSED},
    RESERVED: {"send": BUSY, "check": CHECKING, "release": IDLE, "close": CLOSED},
    CHECKING: {"done": RESERVED, "close": CLOSED},
    BUSY: {"done": IDLE, "drain": DRAINING, "close": CLOSED},
    DRAINING: {"done": CLOSED, "close": CLOSED},
    CLOSED: {},
}


# The table by event, for the request path: ``conn.state = ON["send"][conn.state]``
# is the move ``fire("send")`` makes, without a method call per request.
ON: Final = table.columns(TRANSITIONS)


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
    skipped and counted (``meter.interim``); the final response that follows them
    is the one that completes the request.
    """

    complete: bool
    head: bytes | bytearray | None  # the response bytes read before its headers were complete
    head_only: bool
    keep_alive: bool
    status: int
    send: Send  # the transport's: how this connection writes ...
    recv: Recv  # ... and reads

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
        "meter",
        "opened",
        "out",
        "owner",
        "parser",
        "recv",
        "requests",
        "send",
        "sock",
        "state",
        "status",
        "target",
    )

    def __init__(
        self,
        sock: socket.socket,
        target: int,
        meter: Meter | None = None,
        streams: tuple[Send, Recv] | None = None,
    ) -> None:
        self.sock = sock
        self.send, self.recv = streams or (sock.send, sock.recv)
        self.fd = sock.fileno()
        self.target = target
        self.meter = meter  # interim responses are counted there
        self.state = CONNECTING
        self.parser = httptools.HttpResponseParser(self)
        self.created = self.last_used = self.expires = 0.0
        self.opened = 0.0  # when its connect began, then when its TLS handshake began
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
        self.state = new = table.fire(TRANSITIONS, self.state, event, self)
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
            self.meter.interim()  # type: ignore[union-attr]  # (a test's bare one sees none)
            self.status = 0
        elif status != 101:  # (101: the parser raises HttpParserUpgrade right after this)
            raise BadStatus(status)

    def __repr__(self) -> str:
        return (
            f"<Connection fd={self.fd} {self.state} target={self.target} "
            f"requests={self.requests} status={self.status} complete={self.complete}>"
        )
