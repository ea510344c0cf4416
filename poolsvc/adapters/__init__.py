"""Adapters that give existing code poolsvc's pool without rewriting it.

    session.mount("http://", poolsvc.adapters.RequestsAdapter())
    httpx.Client(transport=poolsvc.adapters.HTTPXTransport())

Each imports its library on first use, so neither requests nor httpx is required.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "RequestsAdapter":
        from poolsvc.adapters.requests_adapter import RequestsAdapter

        return RequestsAdapter
    if name == "HTTPXTransport":
        from poolsvc.adapters.httpx_transport import HTTPXTransport

        return HTTPXTransport
    raise AttributeError(f"module 'poolsvc.adapters' has no attribute {name!r}")


__all__ = ["HTTPXTransport", "RequestsAdapter"]
