"""poolsvc: an HTTP/1.1 connection-pool library, and the pre-fork load-generation
service built on it.

    import poolsvc
    with poolsvc.Client() as client:
        print(client.get("http://127.0.0.1:8080/").status)

The library's names are importable from here; ``poolsvc.adapters`` holds the
requests and httpx adapters (imported on first use: neither package is required).
"""

from __future__ import annotations

from typing import Any

from poolsvc.library.exceptions import (
    BreakerOpen,
    ClientError,
    ConnectError,
    ConnectTimeout,
    HTTPStatusError,
    InvalidRequest,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TLSError,
    WriteError,
)
from poolsvc.library.headers import Headers
from poolsvc.library.hostpool import Timeout
from poolsvc.library.response import Response
from poolsvc.library.retry import Retry
from poolsvc.library.syncclient import Client
from poolsvc.version import __version__
from workers.pool.breaker import BreakerSettings

__all__ = [
    "BreakerOpen",
    "BreakerSettings",
    "Client",
    "ClientError",
    "ConnectError",
    "ConnectTimeout",
    "HTTPStatusError",
    "Headers",
    "InvalidRequest",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "Retry",
    "TLSError",
    "Timeout",
    "WriteError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "adapters":  # (requests and httpx are optional: import on first use)
        import importlib

        return importlib.import_module("poolsvc.adapters")
    raise AttributeError(f"module 'poolsvc' has no attribute {name!r}")
