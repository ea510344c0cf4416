"""The embedded target's HTTP: routes, replies, response heads, request parsing.

Pure: no sockets. Unknown paths (and ``/health``) get ``200 ok``; the routes that
misbehave on request are:

    /status/N           a reply with status N (204 and 304 without a body)
    /bytes/N            N body bytes with a Content-Length
    /chunked/N          N body bytes, chunked
    /close-delimited/N  N body bytes, ended by closing the connection
    /delay/MS           answered after MS milliseconds
    /close, /http10     Connection: close, or an HTTP/1.0 answer
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from http import HTTPStatus
from typing import Literal, NamedTuple

Framing = Literal["length", "chunked", "close", "none"]

MAX_BODY = 10 * 1024 * 1024  # /bytes/N and friends: N is capped here
MAX_HEAD = 64 * 1024  # a request head longer than this gets 431
MAX_DELAY_MS = 600_000
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz"  # non-uniform body so truncation shows
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclasses.dataclass
class Modes:
    """Current misbehaviour; the defaults are 'behave normally'."""

    hang: bool = False
    reset: bool = False
    delay_ms: int = 0
    close_after_response: bool = False
    idle_close_ms: int | None = None
    http10: bool = False


@dataclasses.dataclass
class Counters:
    requests: int = 0  # fully received and parsed
    responses: int = 0  # handed to the transport in full
    connections: int = 0  # accepted in total
    open: int = 0  # currently open
    resets: int = 0  # aborted with RST by the reset mode


class Request(NamedTuple):
    method: bytes
    target: bytes
    v10: bool  # the client spoke HTTP/1.0
    keep_alive: bool


class Reply(NamedTuple):
    status: int
    body: bytes
    framing: Framing = "length"
    delay_ms: int = 0
    close: bool = False  # /close: Connection: close
    http10: bool = False  # /http10: answer as an HTTP/1.0 server


class BadRequest(Exception):
    """Unparseable request; the connection is answered with `status` and closed."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _body(n: int) -> bytes:
    return (_ALPHABET * (n // len(_ALPHABET) + 1))[:n]


def _status(n: int) -> Reply:
    if not 200 <= n <= 599:
        return Reply(400, b"bad status\n")
    if n in (204, 304):  # these must not carry a body nor, here, a Content-Length
        return Reply(n, b"", "none")
    return Reply(n, b"%d\n" % n)


def _sized(framing: Framing) -> Callable[[int], Reply]:
    def make(n: int) -> Reply:
        return Reply(200, _body(n), framing) if n <= MAX_BODY else Reply(400, b"too big\n")

    return make


def _delay(ms: int) -> Reply:
    return Reply(200, b"ok\n", delay_ms=ms) if ms <= MAX_DELAY_MS else Reply(400, b"too long\n")


_OK = Reply(200, b"ok\n")
_PARAM_ROUTES: dict[bytes, Callable[[int], Reply]] = {
    b"status": _status,
    b"bytes": _sized("length"),
    b"chunked": _sized("chunked"),
    b"close-delimited": _sized("close"),
    b"delay": _delay,
}


def route(target: bytes) -> Reply:
    """Map a request target to its reply; unknown paths (and /health) get 200 ok."""
    name, _, arg = target.partition(b"?")[0][1:].partition(b"/")
    if not arg and name in (b"http10", b"close"):
        return Reply(200, b"ok\n", close=name == b"close", http10=name == b"http10")
    make = _PARAM_ROUTES.get(name)
    if make is None:
        return _OK
    if not arg.isdigit():
        return Reply(400, b"bad argument\n")
    return make(int(arg))


@functools.lru_cache(maxsize=512)
def head(v10: bool, status: int, framing: Framing, length: int, connection: bytes) -> bytes:
    """Response head; cached because the same few heads repeat in benchmarks."""
    version = b"HTTP/1.0" if v10 else b"HTTP/1.1"
    parts = [b"%s %d %s\r\n" % (version, status, _REASONS.get(status, b"Unknown"))]
    parts.append(b"Server: poolsvc-target\r\n")
    if framing != "none":
        parts.append(b"Content-Type: text/plain\r\n")
    if framing == "length":
        parts.append(b"Content-Length: %d\r\n" % length)
    elif framing == "chunked":
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if connection:
        parts.append(b"Connection: %s\r\n" % connection)
    return b"".join(parts) + b"\r\n"


def chunked(body: bytes) -> bytes:
    step = max(1, -(-len(body) // 3))  # a few chunks, so clients must reassemble
    pieces = (body[i : i + step] for i in range(0, len(body), step))
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def parse_request(buf: bytearray) -> tuple[Request, int] | None:
    """Parse one request at the start of `buf`: (request, bytes consumed incl. body).

    Returns None while incomplete; raises BadRequest on malformed input.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest(431)
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadRequest(400)
    v10 = parts[2] == b"HTTP/1.0"
    length, keep_alive = 0, not v10
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if not sep:
            raise BadRequest(400)
        if name == b"content-length":
            if not value.isdigit():
                raise BadRequest(400)
            length = int(value)
        elif name == b"connection":
            keep_alive = (keep_alive or b"keep-alive" in value) and b"close" not in value
        elif name == b"transfer-encoding":
            raise BadRequest(501)  # chunked request bodies are not supported
    total = end + 4 + length
    return (Request(parts[0], parts[1], v10, keep_alive), total) if len(buf) >= total else None
