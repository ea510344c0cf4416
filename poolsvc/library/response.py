"""A response as the library hands it over: status, headers, the body whole or streamed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

import orjson

from poolsvc.library.exceptions import HTTPStatusError, InvalidRequest
from poolsvc.library.headers import Headers
from poolsvc.library.reader import Reader
from poolsvc.library.roundtrip import Exchange

_CHARSET: Final = re.compile(r"charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)


class Response:
    """One HTTP/1.1 response.

    ``status``, ``reason``, ``headers`` (:class:`Headers`), ``elapsed`` (seconds from
    the call to the end of the response, or to its head when streamed), ``url``,
    ``method``. The body: ``content`` (bytes, read whole on first use), ``text``
    (decoded by the charset the server named, else UTF-8), :meth:`json`, or
    :meth:`iter_bytes` while it arrives (``stream=True``: nothing is read beyond the
    head until asked; the connection goes back to its pool at the end of the body,
    or is closed by :meth:`close` before it)."""

    __slots__ = ("_body", "_exchange", "_reader", "elapsed", "headers", "method", "reason",
                 "status", "url")  # fmt: skip

    def __init__(self, exchange: Exchange, reader: Reader, elapsed: float) -> None:
        self._exchange: Exchange | None = exchange
        self._reader = reader
        self.status = reader.conn.status
        self.reason = reader.reason
        self.headers = Headers(reader.fields)
        self.elapsed = elapsed
        self.url = ""
        self.method = ""
        self._body: bytes | None = None

    @property
    def ok(self) -> bool:
        """The status is below 400."""
        return self.status < 400

    @property
    def complete(self) -> bool:
        """The whole body has been read (or the response was closed)."""
        return self._exchange is None or self._exchange.conn is None

    def iter_bytes(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (each piece as one read gave it)."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        reader = self._reader
        chunks = reader.chunks
        exchange = self._exchange
        try:
            while True:
                while chunks:
                    yield chunks.popleft()
                if exchange is None or not exchange.read_more():
                    break
            while chunks:
                yield chunks.popleft()
        finally:
            if exchange is not None and exchange.conn is not None:  # left before the end
                exchange.abandon()
            self._exchange = None
        self._body = b""  # consumed

    def read(self) -> bytes:
        """The whole body (once; after iter_bytes, what was not yet yielded)."""
        if self._body is None:
            self._body = b"".join(self.iter_bytes())
        return self._body

    @property
    def content(self) -> bytes:
        return self.read()

    @property
    def encoding(self) -> str:
        match = _CHARSET.search(self.headers.get("content-type", ""))
        return match.group(1) if match else "utf-8"

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; raises ValueError (orjson.JSONDecodeError)."""
        return orjson.loads(self.content)

    def raise_for_status(self) -> Response:
        """Raise :class:`HTTPStatusError` for a 4xx or 5xx status; else return self."""
        if self.status >= 400:
            name = "status_5xx" if self.status >= 500 else "status_4xx"
            raise HTTPStatusError(name, f"{self.status} {self.reason} for {self.method} "
                                  f"{self.url}", response=self)  # fmt: skip
        return self

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read to its end,
        else closed (the rest of the body is not read)."""
        exchange = self._exchange
        self._exchange = None
        if exchange is not None and exchange.conn is not None:
            exchange.abandon()
        if self._body is None:
            self._body = b"".join(self._reader.chunks)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self.complete else "streaming"
        return f"<Response [{self.status} {self.reason}] {self.method} {self.url} {state}>"


def check_timeout(value: Any, key: str = "timeout") -> float:
    """A timeout in seconds, > 0; raises InvalidRequest naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidRequest(key, f"must be a number of seconds > 0, not {value!r}")
    return float(value)
