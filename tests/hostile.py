"""A small HTTP/1.1 server that misbehaves on command, for the regression tests.

Each connection is served by its own thread: it reads requests (head up to the
blank line, plus a Content-Length body), records every raw request it received,
and answers according to the server's ``mode``. Every misbehaviour is real bytes
on a real loopback socket, as a hostile or broken target would send them.

Modes (the answer to each request, unless said otherwise):

    ok              200 with a Content-Length body
    upgrade         101 Switching Protocols with Upgrade/Connection headers
    upgrade_bare    101 Switching Protocols, no Upgrade header
    interim         100 Continue, then 103 Early Hints, then the 200
    endless_header  a status line, then one header line that never ends (until closed)
    big_header      a complete response whose header block is 100 KiB, in one write
    interim_flood   100 Continue, again and again, forever
    extra           the 200 and a second response, in one write
    extra_partial   the 200 and the first bytes of a second response, in one write
    late_extra      the 200, then 50 ms later a 299 nobody asked for
    greet           a 418 sent at accept, before any request; then like ok
    status_999      a status code outside 100-599
    status          the status code in ``status`` (default 503)
    slow_start      the first ``SLOW_FIRST`` requests answered after ``SLOW_MS``; then like ok
    mixed           by the request's place among all received (so the totals of a bounded
                    run do not depend on timing): chunked, a head and its body 5 ms apart,
                    a 404, an interim 100 first, Connection: close (then closed), or ok
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
EXTRA = b"HTTP/1.1 299 Extra\r\nContent-Length: 6\r\n\r\nextra\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n"
SLOW_FIRST, SLOW_MS = 4, 300
GREETING = b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 4\r\n\r\ntea\n"


def mixed(n: int) -> str:
    """What the ``mixed`` mode answers to the ``n``-th request it receives (from 1)."""
    for divisor, kind in ((7, "chunked"), (11, "split"), (13, "404"), (17, "interim")):
        if n % divisor == 0:
            return kind
    return "close" if n % 19 == 0 else "ok"


class Hostile:
    """The server; a context manager (listens on enter, closes everything on exit)."""

    def __init__(self, mode: str = "ok", status: int = 503) -> None:
        self.mode = mode
        self.status = status
        self.requests: list[bytes] = []  # every request received, raw
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> Hostile:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._threads[0].join(5)  # the acceptor: no connection arrives after this
        self._listener.close()
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads[1:]:
            thread.join(5)
        for sock in self._socks:
            sock.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.mode == "greet":
                sock.sendall(GREETING)
            buf = b""
            while not self._stop.is_set():
                request, buf = self._read_request(sock, buf)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                    n = len(self.requests)  # this request's place among all received
                self._answer(sock, n)
        except OSError:
            pass

    def _read_request(self, sock: socket.socket, buf: bytes) -> tuple[bytes | None, bytes]:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None, b""
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        length = 0
        for line in buf[:end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buf) < end + length:
            data = sock.recv(65536)
            if not data:
                return None, b""
            buf += data
        return buf[: end + length], buf[end + length :]

    def _mixed(self, sock: socket.socket, n: int) -> None:
        kind = mixed(n)
        if kind == "chunked":
            sock.sendall(CHUNKED)
        elif kind == "split":
            sock.sendall(OK[:20])
            time.sleep(0.005)
            sock.sendall(OK[20:])
        elif kind == "404":
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n")
        elif kind == "interim":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        elif kind == "close":
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n")
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.sendall(OK)

    def _answer(self, sock: socket.socket, n: int) -> None:
        mode = self.mode
        if mode in ("ok", "greet"):
            sock.sendall(OK)
        elif mode == "mixed":
            self._mixed(sock, n)
        elif mode == "slow_start":
            if n <= SLOW_FIRST:
                time.sleep(SLOW_MS / 1000)
            sock.sendall(OK)
        elif mode == "upgrade":
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n\x81\x02hi"
            )
        elif mode == "upgrade_bare":
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        elif mode == "interim":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK)
        elif mode == "endless_header":
            sock.sendall(b"HTTP/1.1 200 OK\r\nX-Endless: ")
            while not self._stop.is_set():
                sock.sendall(b"a" * 8192)
        elif mode == "big_header":
            filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"b" * 1000) for i in range(100))
            sock.sendall(b"HTTP/1.1 200 OK\r\n" + filler + b"Content-Length: 3\r\n\r\nok\n")
        elif mode == "interim_flood":
            while not self._stop.is_set():
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 64)
        elif mode == "extra":
            sock.sendall(OK + EXTRA)
        elif mode == "extra_partial":
            sock.sendall(OK + EXTRA[:10])
        elif mode == "late_extra":
            sock.sendall(OK)
            time.sleep(0.05)
            sock.sendall(EXTRA)
        elif mode == "status_999":
            sock.sendall(b"HTTP/1.1 999 Odd\r\nContent-Length: 3\r\n\r\nok\n")
        elif mode == "status":
            sock.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 3\r\n\r\nno\n" % self.status)
        elif mode == "silent":
            pass  # reads every request, answers none
        else:
            raise ValueError(f"unknown mode {mode!r}")
