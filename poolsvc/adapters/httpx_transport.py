"""An httpx transport over :class:`poolsvc.Client`.

    client = httpx.Client(transport=poolsvc.adapters.HTTPXTransport(max_per_host=20))

httpx keeps what it does above the connection (redirects, cookies, auth, content
decoding, event hooks); each request goes through the client's per-host pool and
the response body streams from the pooled connection. Failures come as httpx's
exceptions (``ConnectTimeout``, ``ReadTimeout``, ``PoolTimeout``, ``ConnectError``,
``RemoteProtocolError`` ...) with the poolsvc exception, which names the error and
its phase, as ``__cause__``. The timeouts httpx passes (connect, read, pool) apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from poolsvc.adapters.common import header_dict
from poolsvc.library import exceptions as ex
from poolsvc.library.hostpool import Timeout
from poolsvc.library.response import Response
from poolsvc.library.syncclient import Client

# ours -> httpx's, the first match wins (a timeout before the error it specialises);
# anything else (a refused or failed connect, TLS, the breaker) is a ConnectError
_KINDS: tuple[tuple[type[ex.ClientError], type[httpx.TransportError]], ...] = (
    (ex.ConnectTimeout, httpx.ConnectTimeout),
    (ex.ReadTimeout, httpx.ReadTimeout),
    (ex.PoolTimeout, httpx.PoolTimeout),
    (ex.RemoteProtocolError, httpx.RemoteProtocolError),
    (ex.WriteError, httpx.WriteError),
    (ex.ReadError, httpx.ReadError),
)


def _error(exc: ex.ClientError, request: httpx.Request) -> Exception:
    """httpx's exception for a poolsvc one."""
    if isinstance(exc, ex.InvalidRequest):
        return httpx.UnsupportedProtocol(str(exc), request=request) if exc.key == "url" else (
            httpx.LocalProtocolError(str(exc), request=request))  # fmt: skip
    kind = next((theirs for ours, theirs in _KINDS if isinstance(exc, ours)), httpx.ConnectError)
    return kind(str(exc), request=request)


class _Body(httpx.SyncByteStream):
    """The response body, read from the pooled connection as httpx iterates it."""

    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except ex.ClientError as exc:
            raise _error(exc, self._request) from exc

    def close(self) -> None:
        self._response.close()


class HTTPXTransport(httpx.BaseTransport):
    """``httpx.Client(transport=...)``; keyword arguments make the :class:`Client`."""

    def __init__(self, client: Client | None = None, **options: Any) -> None:
        self.client = client or Client(**options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        headers = header_dict(request.headers.multi_items())
        try:
            response = self.client.request(
                request.method, str(request.url), headers=headers, body=body or None,
                timeout=_timeout(request.extensions.get("timeout"), self.client), stream=True,
            )  # fmt: skip
        except ex.ClientError as exc:
            raise _error(exc, request) from exc
        return httpx.Response(
            response.status,
            headers=response.headers.multi_items(),
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": response.reason.encode("latin-1")},
        )  # fmt: skip

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"<HTTPXTransport {self.client!r}>"


def _timeout(given: Any, client: Client) -> Timeout | None:
    """httpx's timeout extension ({connect, read, write, pool}, None: no limit)."""
    if not isinstance(given, dict):
        return None
    base = client.timeout
    forever = 365 * 86400.0  # httpx's None: wait as long as it takes

    def pick(key: str, default: float) -> float:
        value = given.get(key, default)
        return forever if value is None else float(value)

    return Timeout(connect=pick("connect", base.connect), read=pick("read", base.read),
                   pool=pick("pool", base.pool))  # fmt: skip
