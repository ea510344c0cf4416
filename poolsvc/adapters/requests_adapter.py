"""A requests transport adapter over :class:`poolsvc.Client`.

    session = requests.Session()
    adapter = poolsvc.adapters.RequestsAdapter(max_per_host=20)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

requests keeps doing what it does above the connection (redirects, cookies,
authentication, hooks); the adapter sends each request through the client's
per-host pool and hands back a response whose ``raw`` streams the body from the
pooled connection (gzip and deflate decoded, as urllib3 would). Failures come
as requests' exceptions (``ConnectTimeout``, ``ReadTimeout``, ``SSLError``,
``ConnectionError``, ``ChunkedEncodingError`` ...), each with the poolsvc
exception, which names the error and its phase, as ``__cause__``. ``verify`` and
``cert`` given per request use a client of their own; proxies are not used.
"""

from __future__ import annotations

import http.client
import zlib
from collections.abc import Iterator
from typing import Any, cast

import requests
from requests.adapters import BaseAdapter
from requests.exceptions import (
    ChunkedEncodingError,
    ConnectionError,
    ConnectTimeout,
    InvalidHeader,
    InvalidURL,
    ReadTimeout,
    SSLError,
)
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from poolsvc.adapters.common import body_bytes, header_dict
from poolsvc.library import exceptions as ex
from poolsvc.library.hostpool import Timeout
from poolsvc.library.response import Response
from poolsvc.library.syncclient import Client


def _error(exc: ex.ClientError, request: Any) -> Exception:
    """requests' exception for a poolsvc one."""
    kind: type[Exception]
    if isinstance(exc, ex.InvalidRequest):
        kind = {"url": InvalidURL, "headers": InvalidHeader}.get(exc.key, ValueError)
        return kind(str(exc))
    if isinstance(exc, ex.ConnectTimeout):
        kind = ConnectTimeout
    elif isinstance(exc, ex.ReadTimeout):
        kind = ReadTimeout
    elif isinstance(exc, ex.TLSError):
        kind = SSLError
    else:
        kind = ConnectionError
    return kind(str(exc), request=request)


_extract_cookies: Any = requests.cookies.extract_cookies_to_jar  # (untyped in requests)


class _Raw:
    """``response.raw``: the body from the pooled connection, as requests reads it."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason
        self.headers = CaseInsensitiveDict(
            {k: response.headers[k] for k in response.headers}
        )  # fmt: skip
        msg = http.client.HTTPMessage()
        for name, value in response.headers.multi_items():
            msg[name] = value
        self._original_response = _Original(msg)  # requests reads cookies from it
        encoding = response.headers.get("content-encoding", "").strip().lower()
        self._decoder: Any = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in ("gzip", "x-gzip")
            else zlib.decompressobj() if encoding == "deflate" else None
        )  # fmt: skip
        self._pieces: Iterator[bytes] | None = None

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        decoder = self._decoder if decode_content else None
        try:
            for piece in self._response.iter_bytes():
                data = decoder.decompress(piece) if decoder is not None else piece
                if data:
                    yield data
            if decoder is not None and (tail := decoder.flush()):
                yield tail
        except ex.ReadTimeout as exc:
            raise ConnectionError(str(exc)) from exc
        except ex.ClientError as exc:
            raise ChunkedEncodingError(str(exc)) from exc
        except zlib.error as exc:
            raise requests.exceptions.ContentDecodingError(str(exc)) from exc

    def read(self, amt: int | None = None, decode_content: bool = True, **_: Any) -> bytes:
        return b"".join(self.stream(amt, decode_content))

    def close(self) -> None:
        self._response.close()

    def release_conn(self) -> None:
        self._response.close()

    @property
    def closed(self) -> bool:
        return self._response.complete


class _Original:
    def __init__(self, msg: http.client.HTTPMessage) -> None:
        self.msg = msg


class RequestsAdapter(BaseAdapter):
    """Mount on a Session's prefixes; keyword arguments make the :class:`Client`."""

    def __init__(self, client: Client | None = None, **options: Any) -> None:
        super().__init__()
        self._options = options
        self.client = client or Client(**options)
        self._clients: dict[tuple[Any, Any], Client] = {}

    def _client_for(self, url: str, verify: Any, cert: Any) -> Client:
        if (verify is True and cert is None) or not url.lower().startswith("https:"):
            return self.client
        key = (verify, cert)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = Client(**{**self._options, "verify": verify,
                                                    "cert": cert})  # fmt: skip
        return client

    def send(
        self,
        request: Any,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        """Send ``request`` (a PreparedRequest) through the pool."""
        try:
            data = body_bytes(request.body)
            headers = header_dict(request.headers.items())
            limits = _timeout(timeout, self.client)
            response = self._client_for(request.url, verify, cert).request(
                request.method, request.url, headers=headers, body=data, timeout=limits,
                stream=True,
            )  # fmt: skip
        except ex.ClientError as exc:
            raise _error(exc, request) from exc
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
        out = requests.Response()
        out.status_code = response.status
        raw = _Raw(response)
        out.headers = raw.headers
        out.encoding = get_encoding_from_headers(out.headers)
        out.raw = raw
        out.reason = response.reason
        out.url = request.url
        _extract_cookies(out.cookies, request, raw)
        out.request = request
        cast(Any, out).connection = self  # (requests types it as its own HTTPAdapter)
        out.elapsed = _elapsed(response.elapsed)
        return out

    def close(self) -> None:
        self.client.close()
        for client in self._clients.values():
            client.close()

    def __repr__(self) -> str:
        return f"<RequestsAdapter {self.client!r}>"


def _timeout(value: Any, client: Client) -> Timeout | None:
    """requests' timeout (seconds, or a (connect, read) pair) as the client's."""
    if value is None:
        return None
    pool = client.timeout.pool
    if isinstance(value, tuple):
        connect, read = value
        base = client.timeout
        return Timeout(connect=connect or base.connect, read=read or base.read, pool=pool)
    return Timeout(connect=float(value), read=float(value), pool=pool)


def _elapsed(seconds: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=seconds)
