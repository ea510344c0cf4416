"""The target's data port: one :class:`DataConnection` per accepted connection.

A hand-parsed HTTP/1.1 keep-alive server built on ``asyncio.Protocol``.  Each
connection owns a byte buffer; complete requests (head found with
``find(b"\\r\\n\\r\\n")`` plus a Content-Length body) are taken off it one at a
time, so pipelined requests are answered strictly in order: while a response is
pending (delayed) the rest of the buffer waits.

Every connection consults the shared modes (:mod:`poolsvc.target.modes`) at each
request (hang, reset, delays) or each response (close/HTTP/1.0 framing).  Every
effect is produced by the kernel: ``hang`` simply never writes, ``reset`` sets
SO_LINGER {1, 0} and aborts (close with zero linger makes the kernel send RST,
the peer sees ECONNRESET), ``idle_close_ms`` and ``restart`` do an ordinary
close (FIN), and while the listener is closed the kernel refuses connects
(ECONNREFUSED).

A connection that was hung stays hung after ``hang`` is cleared: its request is
never answered and later bytes on it are discarded.  New requests on other
connections are answered normally.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Protocol

from poolsvc.target.replies import (
    BadRequest,
    Counters,
    Modes,
    Reply,
    Request,
    chunked,
    head,
    parse_request,
    route,
)

_RST_LINGER = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST


class Owner(Protocol):
    """What a connection needs of the target that accepted it
    (:class:`poolsvc.target.modes.Target`, which imports this module: a protocol here
    keeps the imports running one way)."""

    @property
    def modes(self) -> Modes: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def listening(self) -> bool: ...

    def attach(self, conn: DataConnection) -> None: ...

    def detach(self, conn: DataConnection) -> None: ...


class DataConnection(asyncio.Protocol):
    """One data-port connection; requests are served strictly one after another."""

    def __init__(self, target: Owner) -> None:
        self._t = target
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a response is pending: leave the rest of the buffer alone
        self._hung = False
        self._pending: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = self._loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._t.attach(self)
        if not self._t.listening:  # accepted by the kernel just before the listener closed
            transport.close()
        else:
            self.rearm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for handle in (self._pending, self._idle):
            if handle is not None:
                handle.cancel()
        self._t.detach(self)

    def data_received(self, data: bytes) -> None:
        if self._hung:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._buf += data
        self._serve()

    def close(self) -> None:
        """Normal close (FIN once buffered output is flushed)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def rearm_idle(self) -> None:
        """(Re)start the idle-close timer if the mode is on and no request is in progress."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        ms = self._t.modes.idle_close_ms
        transport = self._transport
        if ms is None or self._busy or self._buf or transport is None or transport.is_closing():
            return
        self._idle = self._loop.call_at(self._idle_since + ms / 1000, self.close)

    def _serve(self) -> None:
        while not self._busy and self._transport is not None and not self._transport.is_closing():
            try:
                parsed = parse_request(self._buf)
            except BadRequest as exc:  # answer it, then close: we cannot find the next request
                self._buf.clear()
                self._send(Request(b"GET", b"/", False, False), Reply(exc.status, b"bad request\n"))
                return
            if parsed is None:
                break
            req, used = parsed
            del self._buf[:used]
            self._handle(req)
        self.rearm_idle()

    def _handle(self, req: Request) -> None:
        self._t.counters.requests += 1
        modes = self._t.modes
        if modes.hang:
            self._busy = self._hung = True
            self._buf.clear()
        elif modes.reset:
            self._reset()
        else:
            reply = route(req.target)
            delay = modes.delay_ms + reply.delay_ms
            if delay <= 0:
                self._send(req, reply)
            else:
                self._busy = True
                self._pending = self._loop.call_later(delay / 1000, self._send_later, req, reply)

    def _send_later(self, req: Request, reply: Reply) -> None:
        self._busy, self._pending = False, None
        self._send(req, reply)
        self._serve()  # requests pipelined behind the delayed one

    def _reset(self) -> None:
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
        self._transport.abort()  # closes the socket with zero linger: the kernel sends RST
        self._t.counters.resets += 1

    def _send(self, req: Request, reply: Reply) -> None:
        if self._transport is None or self._transport.is_closing():
            return  # the peer went away while the reply was delayed
        modes, framing = self._t.modes, reply.framing
        v10 = modes.http10 or reply.http10
        if (framing == "chunked" and (v10 or req.v10)) or (framing == "close" and v10):
            framing = "length"  # HTTP/1.0 has no chunking; http10 mode always sends a length
        if v10:
            connection, close = b"", True  # an HTTP/1.0 server closes after each response
        elif modes.close_after_response or reply.close or not req.keep_alive:
            connection, close = b"close", True
        else:
            connection = b"keep-alive" if req.v10 and framing != "close" else b""
            close = framing == "close"
        payload = b"" if req.method == b"HEAD" else reply.body
        if framing == "chunked" and req.method != b"HEAD":
            payload = chunked(payload)  # even an empty body needs its last-chunk
        start = head(v10, reply.status, framing, len(reply.body), connection)
        self._transport.write(start + payload)
        self._t.counters.responses += 1
        self._idle_since = self._loop.time()
        if close:
            self._transport.close()
