"""Reading one response off a pooled connection, for a caller that wants all of it.

The service reads a response through :class:`workers.pool.connection.Connection`'s
httptools callbacks (status, keep-alive, interim 1xx skipped, a HEAD ended at its
headers, a second response refused) and keeps nothing else. A :class:`Reader` is
the parser's protocol object for the library: it hands each of those callbacks to
the very same Connection methods, so both read one HTTP/1.1 the same way, and it
adds what only a library caller needs: the reason, the header fields and the body.
(httptools calls ``on_header`` and ``on_body`` only on an object that has them, which
is why the service's Connection does not: it pays nothing for them.)

Framing follows workers.net.httpwire: the header block so far is kept in ``conn.head``
(its size checked against ``max_header_bytes``), and a body that ends when the
server closes is recognised by :func:`workers.net.httpwire.close_delimited`.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import httptools

from workers.pool.connection import Connection

MAX_HEADER_BYTES: Final = 65536


class Reader:
    """One response in the reading: ``head_done`` once the final header block is in,
    ``conn.complete`` once the message is; body bytes wait in ``chunks``."""

    __slots__ = ("chunks", "conn", "fields", "head_done", "reason", "received")

    def __init__(self, conn: Connection, head_only: bool) -> None:
        self.conn = conn
        conn.reset_response(head_only)
        # A fresh parser per response: the Connection's HEAD rule swaps parsers, and a
        # parser bound to this reader must be the one fed (about a microsecond).
        conn.parser = httptools.HttpResponseParser(self)
        self.fields: list[tuple[str, str]] = []
        self.reason = ""
        self.head_done = False
        self.chunks: deque[bytes] = deque()
        self.received = 0  # bytes read for this response

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises httptools.HttpParserError / HttpParserUpgrade, or the
        Connection's Unsolicited / BadStatus."""
        conn = self.conn
        self.received += len(data)
        if not self.head_done:
            head = conn.head
            if head is None:
                conn.head = data
            else:
                if head.__class__ is bytes:
                    conn.head = head = bytearray(head)
                head += data
        conn.parser.feed_data(data)

    # httptools callbacks: the Connection decides, the reader keeps ------------------
    def on_message_begin(self) -> None:
        self.conn.on_message_begin()

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        conn = self.conn
        conn.on_headers_complete()  # (a HEAD response completes here)
        status = conn.status
        if status >= 200 or status == 101:
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        if self.head_done:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        conn = self.conn
        conn.on_message_complete()
        if not conn.status:  # an interim response ended: the final one follows
            self.fields = []
            self.reason = ""

    def __repr__(self) -> str:
        return (
            f"<Reader status={self.conn.status} head_done={self.head_done} "
            f"complete={self.conn.complete} queued={len(self.chunks)}>"
        )
