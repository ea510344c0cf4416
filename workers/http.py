"""HTTP/1.1 on the wire: request bytes we write, and what httptools cannot tell us.

Requests are rendered once per target into immutable bytes, so sending one costs
a single ``send`` of a prebuilt buffer.  Responses are parsed by httptools
(llhttp); it handles Content-Length, chunked, 204/304 and keep-alive semantics,
but it has no end-of-stream call, so a body delimited by the server closing the
connection is recognised here from the header block (:func:`close_delimited`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FRAMING = re.compile(rb"(?im)^(content-length|transfer-encoding)[ \t]*:")


def build_request(
    method: str,
    path: str,
    host_header: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    keep_alive: bool = True,
) -> bytes:
    """Render one HTTP/1.1 request.  Raises ValueError on an invalid method, path or header."""
    if not _TOKEN.match(method):
        raise ValueError(f"invalid HTTP method {method!r}")
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise ValueError(f"invalid request path {path!r} (must start with / and hold no spaces)")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    names = set()
    for name, value in (headers or {}).items():
        if not _TOKEN.match(name) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}")
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if (body or method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if not keep_alive and "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def host_header(host: str, port: int) -> str:
    """Host header value: IPv6 literals in brackets, the port unless it is 80."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 80 else f"{shown}:{port}"


def close_delimited(head: bytes) -> bool:
    """True when a response whose header block starts ``head`` has neither a
    Content-Length nor a Transfer-Encoding, i.e. its body ends when the server closes."""
    end = head.find(b"\r\n\r\n")
    block = head if end < 0 else head[:end]
    return _FRAMING.search(block) is None
