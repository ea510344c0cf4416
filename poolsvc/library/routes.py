"""From a call's URL, method, headers and body to the bytes of one request, checked.

A URL is split once (``http`` or ``https``, a host, a port, an origin-form target)
and the split kept for the next call with the same URL; the request is rendered by
:func:`workers.net.httpwire.build_request`, the service's renderer, whose checks (RFC
9110/9112) raise before anything is sent. A request without headers or body of its
own is rendered once and its bytes reused (the common case of a client polling
one URL: no rendering on the request path).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from poolsvc.library.exceptions import InvalidRequest
from workers.net.httpwire import RequestError, build_request, check_headers, host_header

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_CACHE_SIZE: Final = 512

Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready for the wire: its host's key, the bytes, and for the caller."""

    key: Key
    method: str
    url: str
    data: bytes


class Router:
    """URL splitting and request rendering, with the client's default headers."""

    def __init__(self, headers: Mapping[str, str], user_agent: str) -> None:
        try:
            check_headers(headers)
        except RequestError as exc:
            raise InvalidRequest("headers", str(exc).partition(": ")[2]) from None
        self.headers = dict(headers)
        self.user_agent = user_agent
        self._routes: dict[str, tuple[Key, str, str]] = {}
        self._plain: dict[tuple[str, str], Prepared] = {}  # (method, url): no headers or body

    def route(self, url: str) -> tuple[Key, str, str]:
        """(key, target, Host header) of ``url``; raises InvalidRequest (key ``url``)."""
        hit = self._routes.get(url)
        if hit is not None:
            return hit
        if not isinstance(url, str):
            raise InvalidRequest("url", f"must be a string, not {type(url).__name__}")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidRequest("url", f"{url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise InvalidRequest("url", f"{url!r}: the scheme must be http or https")
        host = parts.hostname or ""
        if not host:
            raise InvalidRequest("url", f"{url!r} names no host")
        if parts.username is not None or parts.password is not None:
            raise InvalidRequest("url", "credentials in a URL are refused: send an "
                                 "Authorization header")  # fmt: skip
        port = port if port is not None else DEFAULT_PORTS[scheme]
        if not 0 < port < 65536:
            raise InvalidRequest("url", f"{url!r}: port {port} is out of range")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        _literal(host)
        out = ((scheme, host, port), target, host_header(host, port, DEFAULT_PORTS[scheme]))
        if len(self._routes) >= _CACHE_SIZE:
            self._routes.clear()
        self._routes[url] = out
        return out

    def prepare(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        body: bytes | str | None,
    ) -> Prepared:
        """The request, rendered; raises InvalidRequest naming what is wrong."""
        plain = not params and not headers and body is None
        if plain:
            hit = self._plain.get((method, url))
            if hit is not None:
                return hit
        key, target, host = self.route(url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params, doseq=True)
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif body is not None and not isinstance(body, bytes | bytearray | memoryview):
            raise InvalidRequest("body", f"must be bytes or str, not {type(body).__name__}")
        merged = _merge(self.headers, headers)
        try:
            keys = ("method", "url", "headers")
            data = build_request(
                method, target, host, merged, bytes(body or b""), user_agent=self.user_agent,
                keys=keys,
            )  # fmt: skip
        except RequestError as exc:
            raise InvalidRequest(exc.key, str(exc).partition(": ")[2]) from None
        except (TypeError, AttributeError) as exc:
            raise InvalidRequest("method" if not isinstance(method, str) else "headers",
                                 str(exc)) from None  # fmt: skip
        prepared = Prepared(key, method, url, data)
        if plain:
            if len(self._plain) >= _CACHE_SIZE:
                self._plain.clear()
            self._plain[(method, url)] = prepared
        return prepared

    def __repr__(self) -> str:
        return f"<Router routes={len(self._routes)} rendered={len(self._plain)}>"


def _merge(defaults: Mapping[str, str], given: Mapping[str, str] | None) -> dict[str, str]:
    """The client's headers, overridden by the call's (names in any letter case)."""
    if not given:
        return dict(defaults)
    if not isinstance(given, Mapping):
        raise InvalidRequest("headers", f"must be a mapping, not {type(given).__name__}")
    lower = {name.lower() for name in given if isinstance(name, str)}
    out = {k: v for k, v in defaults.items() if k.lower() not in lower}
    out.update(given)
    return out


def _literal(host: str) -> None:
    """A host is a DNS name or an IP literal; refuse what is neither (spaces, controls)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if any(c.isspace() or ord(c) < 33 or c in "/\\@#?" for c in host):
        raise InvalidRequest("url", f"{host!r} is not a host name")
