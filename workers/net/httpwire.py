"""HTTP/1.1 on the wire: the request bytes we write, and what httptools cannot tell us.

Requests are rendered once per target into immutable bytes, so sending one costs
a single ``send`` of a prebuilt buffer. Every field is checked first, against
RFC 9110/9112, with patterns anchored at both ends (``\\A...\\Z``: ``$`` would let
a trailing newline through): what goes on the wire is exactly the request that
was configured, or nothing. The checks raise :class:`RequestError`, whose
``key`` names the configuration key at fault.

We own the message framing: a user ``Transfer-Encoding`` is refused, and a user
``Content-Length`` must equal the body's length. A user ``Host`` replaces ours.
A header given twice (in any letter case) is refused, since the singleton ones
(Host, Content-Length, Authorization, ...) would be ambiguous and a list-valued
one can be written once with its values joined by ", ".

Responses are parsed by httptools (llhttp). It has no end-of-stream call, so a body
delimited by the server closing the connection is recognised from the header
block (:func:`close_delimited`), which may start with interim (1xx) responses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
DEFAULT_SUCCESS: Final = "2xx,3xx"

_TOKEN = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 3986 characters allowed in an origin-form target (pchar, "/" and "?"), and
# percent-encoded octets; no fragment, no space, no control character.
_TARGET_CHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2}")
_ORIGIN_FORM = re.compile(r"\A/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*\Z")
# field-value: visible ASCII or obs-text, with SP/HTAB inside but not at either end.
_FIELD_VALUE = re.compile(
    r"\A(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?\Z"
)
_FRAMING = re.compile(rb"(?im)^(content-length|transfer-encoding)[ \t]*:")
_INTERIM = re.compile(rb"\AHTTP/\d\.\d 1(?!01)\d\d")  # a 1xx status line other than 101


class RequestError(ValueError):
    """A request field that must not go on the wire; ``key`` is the config key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def check_method(method: str, key: str = "method") -> None:
    if not _TOKEN.match(method):
        raise RequestError(key, f"{method!r} is not an HTTP method (a token, RFC 9110 9.1)")
    if method == "CONNECT":
        raise RequestError(key, "CONNECT opens a tunnel; poolsvc sends requests, not tunnels")


def check_target(path: str, method: str = "GET", key: str = "path") -> None:
    """An origin-form request-target (``/a/b?q``), or ``*`` for OPTIONS."""
    if path == "*" and method == "OPTIONS":
        return
    if _ORIGIN_FORM.match(path):
        return
    if not path.startswith("/"):
        raise RequestError(key, f"{path!r} must start with / (origin-form, RFC 9112 3.2.1)")
    at = 1
    while at < len(path) and (m := _TARGET_CHAR.match(path, at)):
        at = m.end()
    raise RequestError(
        key,
        f"character {path[at]!r} at position {at} of {path!r} is not allowed (percent-encode it)",
    )


def check_headers(headers: Mapping[str, str], key: str = "headers") -> None:
    """Names are tokens, values field-values, each name once; framing stays ours."""
    seen: set[str] = set()
    for name, value in headers.items():
        if not isinstance(value, str):
            raise RequestError(key, f"the value of {name!r} must be a string")
        if not _TOKEN.match(name):
            raise RequestError(key, f"{name!r} is not a header name (a token, RFC 9110 5.1)")
        lower = name.lower()
        if lower in seen:
            raise RequestError(key, f"{name!r} is given twice (join list values with ', ')")
        seen.add(lower)
        if not _FIELD_VALUE.match(value):
            raise RequestError(
                key,
                f"the value of {name!r} holds a control character or leading/trailing "
                "whitespace (RFC 9110 5.5)",
            )
        if lower == "transfer-encoding":
            raise RequestError(key, "Transfer-Encoding is refused: poolsvc frames the body itself")


def build_request(
    method: str,
    path: str,
    host_header: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    keep_alive: bool = True,
    user_agent: str = "",
    keys: tuple[str, str, str] = ("method", "path", "headers"),
) -> bytes:
    """Render one HTTP/1.1 request; raises :class:`RequestError` on any invalid field.

    ``keys`` name the config keys of method, path and headers in the errors.
    """
    headers = dict(headers or {})
    check_method(method, keys[0])
    check_target(path, method, keys[1])
    check_headers(headers, keys[2])
    lower = {name.lower(): name for name in headers}
    host = headers.pop(lower["host"]) if "host" in lower else host_header
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if user_agent and "user-agent" not in lower:
        lines.append(f"User-Agent: {user_agent}")
    if "content-length" in lower:
        given = headers[lower["content-length"]]
        if given != str(len(body)):
            raise RequestError(
                keys[2], f"Content-Length {given!r} contradicts the body ({len(body)} bytes)"
            )
    if not keep_alive and "connection" in lower:
        raise RequestError(keys[2], "a Connection header conflicts with keep_alive false")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if (body or method in ("POST", "PUT", "PATCH")) and "content-length" not in lower:
        lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise RequestError(keys[2], "header values must be Latin-1 (obs-text) at most") from None
    return head + body


def host_header(host: str, port: int, default: int = 80) -> str:
    """Host header value: IPv6 literals in brackets, the port unless it is the scheme's
    ``default`` (80 for http, 443 for https)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


def parse_statuses(spec: str, key: str = "success_statuses") -> tuple[tuple[int, int], ...]:
    """``"2xx,3xx"``, ``"200-299,404"`` ... as inclusive (low, high) ranges within 100-599."""
    ranges = []
    for part in spec.split(","):
        item = part.strip().lower()
        if re.fullmatch(r"[1-5]xx", item):
            low = int(item[0]) * 100
            ranges.append((low, low + 99))
        elif m := re.fullmatch(r"(\d{3})(?:-(\d{3}))?", item):
            low, high = int(m[1]), int(m[2] or m[1])
            if not 100 <= low <= high <= 599:
                raise RequestError(key, f"{part.strip()!r} is not within 100-599")
            ranges.append((low, high))
        else:
            raise RequestError(
                key, f"{part.strip()!r}: give codes, ranges or classes, e.g. 2xx,304"
            )
    return tuple(ranges)


def status_table(ranges: tuple[tuple[int, int], ...]) -> bytes:
    """One byte per status code 0-599: 1 where the code counts as a success (hot-path lookup)."""
    table = bytearray(600)
    for low, high in ranges:
        table[low : high + 1] = b"\x01" * (high - low + 1)
    return bytes(table)


def final_head(head: bytes | bytearray) -> tuple[int, int]:
    """(start, end) of the final response's header block in ``head`` (the bytes read
    before it completed), skipping interim 1xx responses; end is -1 while incomplete."""
    start = 0
    while True:
        end = head.find(b"\r\n\r\n", start)
        if end < 0 or not _INTERIM.match(head[start : start + 12]):
            return start, end if end < 0 else end + 4
        start = end + 4


def close_delimited(head: bytes | bytearray) -> bool:
    """True when the final response whose header block starts ``head`` has neither a
    Content-Length nor a Transfer-Encoding, i.e. its body ends when the server closes."""
    start, end = final_head(head)
    return _FRAMING.search(head[start : end if end >= 0 else len(head)]) is None
