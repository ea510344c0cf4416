"""The library's exceptions: one class per phase, carrying the counters' name and phase.

Every failure of a request raises a :class:`ClientError` whose ``name`` is the
counter name (:data:`workers.shared.errors.ERROR_CLASSES`: ``ECONNREFUSED``,
``read_timeout``, ``pool_timeout`` ...) and whose ``phase`` is the phase the
service counts it under (``connect``, ``tls``, ``write``, ``read``, ``pool``,
``breaker``, ``status``, ``injected``). ``client.stats()`` and the Prometheus
collector count the same failure under the same two words, so an exception in a
log and a counter on a dashboard name one thing.

An injected fault keeps the class of the failure it causes (an injected reset is
a :class:`ReadError` named ``ECONNRESET``) with ``phase == "injected"``.

:class:`InvalidRequest` is raised before anything is sent (a bad URL, method,
header or body); it is never counted: no request existed. :data:`TABLE` is the
one list of the classes, their phase and names; docs/library.md's table is
checked against it by a test.
"""

from __future__ import annotations

from typing import Any, Final

from workers.shared.errors import ERROR_CLASSES, PoolSvcError
from workers.shared.errors import ConnectError as _ServiceConnectError


class ClientError(PoolSvcError):
    """Root of the library's errors: ``name`` (counter name), ``phase``, ``culprit``
    (``local``: this process or host; ``remote``: the server or the path to it), and
    ``detail`` (a few words on what happened)."""

    def __init__(self, name: str, detail: str = "", phase: str | None = None) -> None:
        super().__init__(name, detail)
        if phase is not None:
            self.phase = phase

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.detail, self.phase))


class InvalidRequest(ClientError, ValueError):
    """The request cannot be sent as given (``key``: url, method, headers, body,
    json, timeout ...); raised before any I/O, never counted."""

    phase = "request"

    def __init__(self, key: str, detail: str = "", phase: str | None = None) -> None:
        super().__init__("invalid_request", f"{key}: {detail}" if detail else key, phase)
        self.key = key

    @property
    def culprit(self) -> str:
        return "local"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.detail.partition(": ")[2], self.phase))


class PoolError(ClientError):
    """No connection could be had: the pool's limits or its state."""

    phase = "pool"


class PoolTimeout(PoolError):
    """Every connection of the host (or the client's total) stayed busy for the pool
    timeout (``pool_timeout``)."""


class PoolExhausted(PoolError):
    """``pool_block=False`` and the pool is full (``pool_exhausted``)."""


class PoolClosed(PoolError):
    """The client was closed (``cancelled``)."""


class BreakerOpen(ClientError):
    """The host's circuit breaker refused the request before any I/O (``breaker_open``)."""

    phase = "breaker"


class ConnectError(ClientError, _ServiceConnectError):
    """The TCP connect failed (``ECONNREFUSED``, ``EHOSTUNREACH`` ...), or the name did
    not resolve (``EOTHER``, the resolver's message as detail)."""

    phase = "connect"


class ConnectTimeout(ConnectError):
    """The TCP connect did not complete within the connect timeout (``connect_timeout``)."""


class TLSError(ClientError):
    """The TLS handshake failed (``tls_cert_verify_failed``, ``tls_alert_*`` ...)."""

    phase = "tls"


class WriteError(ClientError):
    """Writing the request failed (``EPIPE``, ``ECONNRESET``, ``ETIMEDOUT``)."""

    phase = "write"


class ReadError(ClientError):
    """Reading the response failed (``ECONNRESET``, ``early_eof`` ...)."""

    phase = "read"


class ReadTimeout(ReadError):
    """No byte of the response for the read timeout (``read_timeout``)."""


class RemoteProtocolError(ReadError):
    """The response is not HTTP/1.x as we can read it (``protocol_error``,
    ``unexpected_upgrade``, ``header_too_large``)."""


class HTTPStatusError(ClientError):
    """``Response.raise_for_status()``: the status is not a success (``status_4xx``,
    ``status_5xx``, ``status_other``); ``response`` is the response."""

    phase = "status"

    def __init__(
        self, name: str, detail: str = "", phase: str | None = None, response: Any = None
    ) -> None:
        super().__init__(name, detail, phase)
        self.response = response


_TIMEOUT: Final = {"connect_timeout": ConnectTimeout, "read_timeout": ReadTimeout}
_PROTOCOL: Final = frozenset(
    {"protocol_error", "unexpected_upgrade", "header_too_large", "early_eof"}
)
_BY_PHASE: Final[dict[str, type[ClientError]]] = {
    "pool": PoolError,
    "breaker": BreakerOpen,
    "connect": ConnectError,
    "tls": TLSError,
    "write": WriteError,
    "read": ReadError,
    "status": HTTPStatusError,
}
_POOL: Final = {
    "pool_timeout": PoolTimeout,
    "pool_exhausted": PoolExhausted,
    "cancelled": PoolClosed,
}

#: (class, phase, the names it carries): the one table of the library's exceptions.
TABLE: Final[tuple[tuple[type[ClientError], str, tuple[str, ...]], ...]] = (
    (InvalidRequest, "request", ("invalid_request",)),
    (PoolTimeout, "pool", ("pool_timeout",)),
    (PoolExhausted, "pool", ("pool_exhausted",)),
    (PoolClosed, "pool", ("cancelled",)),
    (BreakerOpen, "breaker", ("breaker_open",)),
    (ConnectTimeout, "connect", ("connect_timeout",)),
    (ConnectError, "connect", ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL",
                                "EMFILE", "EOTHER", "any errno name")),
    (TLSError, "tls", ("tls_cert_verify_failed", "tls_handshake_timeout",
                       "tls_protocol_version", "tls_eof", "tls_error", "tls_alert_*")),
    (WriteError, "write", ("EPIPE", "ECONNRESET", "ETIMEDOUT")),
    (ReadTimeout, "read", ("read_timeout",)),
    (RemoteProtocolError, "read", ("protocol_error", "early_eof", "unexpected_upgrade",
                                   "header_too_large")),
    (ReadError, "read", ("ECONNRESET", "any errno name")),
    (HTTPStatusError, "status", ("status_4xx", "status_5xx", "status_other")),
)  # fmt: skip


def error_for(phase: str, name: str, detail: str = "", injected: bool = False) -> ClientError:
    """The exception for a failure counted as (``phase``, ``name``); ``injected``: a
    fault caused it (the class is the failure's, the phase ``injected``)."""
    if name not in ERROR_CLASSES:
        raise ValueError(f"{name!r} is not an error name")
    if phase == "pool":
        cls: type[ClientError] = _POOL.get(name, PoolError)
    elif name in _TIMEOUT and _TIMEOUT[name].phase == phase:
        cls = _TIMEOUT[name]
    elif phase == "read" and name in _PROTOCOL:
        cls = RemoteProtocolError
    else:
        cls = _BY_PHASE[phase]
    return cls(name, detail, "injected" if injected else phase)
