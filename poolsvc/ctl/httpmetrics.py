"""``GET /metrics`` over HTTP/1.1, served from inside the supervisor's selector loop.

A scraper is a peer like any other (the core both servers share keeps them:
:class:`poolsvc.ctl.bounded.Peers`): bounded per client (a request head of at most
``MAX_HEAD`` bytes, one response queued at a time, so a client that pipelines and
never reads stops being read), bounded in number (``max_clients``; the oldest
idle one makes room for a newcomer), and timed (a whole request head within
``request_timeout``, a response drained within ``write_timeout``, an idle
keep-alive connection kept ``idle_timeout``). Only ``GET``/``HEAD`` of
``/metrics`` (and ``/``, a pointer to it) are answered; anything else gets its
status code (404, 405, 400, 431) and the connection is closed when it must be.
The page is rendered per request by ``render(openmetrics)`` from the shared
region: a scrape costs the workers nothing.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import Final

from poolsvc.ctl.bounded import Peers
from poolsvc.report.prometheus import OPENMETRICS_TYPE, TEXT_TYPE, wants_openmetrics

MAX_HEAD: Final = 8192
CLOSING_S: Final = 2.0  # how long a closing client's leftover input is read and dropped
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
INDEX_PAGE: Final = b"poolsvc: the metrics are at /metrics\n"


class _Scraper:
    __slots__ = ("close_after", "closing", "events", "inbuf", "outbuf", "since", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.events = 0  # what the selector watches for it
        self.since = now  # when the current request head, response or idle wait began
        self.close_after = False
        self.closing = False  # answered and shut for writing: what it still sends is dropped


class MetricsServer:
    """Serves ``render(openmetrics) -> text`` at ``http://HOST:PORT/metrics``."""

    def __init__(
        self,
        addr: tuple[str, int],
        sel: selectors.BaseSelector,
        render: Callable[[bool], str],
        clock: Callable[[], float],
        max_clients: int = 16,
        request_timeout: float = 10.0,
        write_timeout: float = 10.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self.render, self.clock = render, clock
        self.request_timeout, self.write_timeout = request_timeout, write_timeout
        self.idle_timeout = idle_timeout
        info = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)[0]
        listener = socket.socket(info[0], socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(info[4])
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.host, self.port = listener.getsockname()[:2]
        self.scrapes = 0
        # full: refuse (a scraper retries on its next interval; nothing waits in a queue)
        self.peers: Peers[_Scraper] = Peers(
            listener, sel, clock, _Scraper, self._ready, self._victim, max_clients, "refuse"
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def _victim(self, now: float) -> _Scraper | None:
        """The longest-idle keep-alive connection (no request under way), if any."""
        idle = [c for c in self.peers if not c.inbuf and not c.outbuf]
        return min(idle, key=lambda c: c.since) if idle else None

    def _ready(self, client: _Scraper, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            if self._flush(client):
                self._serve(client)  # the requests pipelined behind that response
            return
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        if client.closing:
            return  # read and dropped, so that closing does not reset our answer away
        if not client.inbuf:
            client.since = self.clock()
        client.inbuf += data
        self._serve(client)

    def _serve(self, client: _Scraper) -> None:
        """Answer each whole request head in ``inbuf``, one at a time: the next waits
        until the response before it is written (a client that does not read its
        responses is not read either)."""
        while self.peers.holds(client) and not client.closing:
            end = client.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(client.inbuf) > MAX_HEAD:
                    self._respond(client, 431, b"request head too large\n", close=True)
                    self._flush(client)
                return
            head = bytes(client.inbuf[:end]).decode("latin-1")
            del client.inbuf[: end + 4]
            status, body, ctype, close, head_only = self._answer(head)
            self._respond(client, status, body, ctype, close, head_only)
            if not self._flush(client):
                return

    def _answer(self, head: str) -> tuple[int, bytes, str, bool, bool]:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, b"bad request line\n", "text/plain", True, False
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return 400, b"bad header line\n", "text/plain", True, False
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") or headers.get("content-length", "0") != "0":
            return 400, b"a request body is not accepted\n", "text/plain", True, False
        conn = headers.get("connection", "").lower()
        close = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return 405, b"GET or HEAD\n", "text/plain", close, False
        path = target.split("?", 1)[0]
        if path == "/":
            return 200, INDEX_PAGE, "text/plain; charset=utf-8", close, head_only
        if path != "/metrics":
            return 404, b"not found: try /metrics\n", "text/plain", close, head_only
        openmetrics = wants_openmetrics(headers.get("accept", ""))
        try:
            page = self.render(openmetrics).encode()
        except Exception as exc:  # a bug must not stop the service: a 500, named
            return 500, f"{type(exc).__name__}\n".encode(), "text/plain", True, False
        self.scrapes += 1
        return 200, page, OPENMETRICS_TYPE if openmetrics else TEXT_TYPE, close, head_only

    def _respond(
        self,
        client: _Scraper,
        status: int,
        body: bytes,
        ctype: str = "text/plain",
        close: bool = False,
        head_only: bool = False,
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Allow: GET, HEAD\r\n" if status == 405 else "")
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        client.outbuf += head.encode() + (b"" if head_only else body)
        client.close_after = close
        client.since = self.clock()

    def _flush(self, client: _Scraper) -> bool:
        """Write what is queued; True when all of it is written and the client stays."""
        if self.peers.send(client) < 0:
            return False
        if client.outbuf:  # watch for room, and read nothing more meanwhile
            self._watch(client, selectors.EVENT_WRITE)
            return False
        if client.close_after:
            self._close_gently(client)
            return False
        client.since = self.clock()
        self._watch(client, selectors.EVENT_READ)
        return True

    def _close_gently(self, client: _Scraper) -> None:
        """Shut our side and read the peer's rest until it closes (or for a while):
        closing with unread input would send a reset that can destroy our answer
        before the peer reads it (an oversized head is exactly that case)."""
        client.closing = True
        client.inbuf.clear()
        client.since = self.clock()
        try:
            client.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(client)
            return
        self._watch(client, selectors.EVENT_READ)

    def _watch(self, client: _Scraper, events: int) -> None:
        self.peers.watch(client, events)

    def sweep(self, now: float) -> None:
        """Close the clients past their deadline (slow heads, stuck readers, idle ones)."""
        for client in self.peers:
            if client.closing:
                late = now - client.since > CLOSING_S
            elif client.outbuf:
                late = now - client.since > self.write_timeout
            elif client.inbuf:
                late = now - client.since > self.request_timeout
            else:
                late = now - client.since > self.idle_timeout
            if late:
                self._drop(client)

    def _drop(self, client: _Scraper) -> None:
        self.peers.drop(client)

    def close(self) -> None:
        self.peers.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url} {self.peers} scrapes={self.scrapes}>"
