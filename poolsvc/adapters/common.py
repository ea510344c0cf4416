"""What both adapters do alike: a request's body and headers as the client takes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

#: framing is the client's own: it sends the body with a Content-Length
_FRAMING: Final = frozenset({"transfer-encoding", "content-length"})


def body_bytes(body: Any) -> bytes | None:
    """The whole body of a request: bytes, str, a file or an iterable of chunks (a
    chunked upload is sent whole, with its length)."""
    if body is None:
        return None
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if hasattr(body, "read"):
        data = body.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if isinstance(body, Iterable):
        return b"".join(c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in body)
    raise TypeError(f"a request body of type {type(body).__name__} cannot be sent")


def header_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs as one mapping: a name given twice becomes one field, its values
    joined by ", " (RFC 9110 5.3); framing headers are dropped (the client frames)."""
    out: dict[str, str] = {}
    lower: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in _FRAMING:
            continue
        if key in lower:
            out[lower[key]] += ", " + value
        else:
            lower[key] = name
            out[name] = value
    return out
