"""``poolsvc.Client``: a synchronous, thread-safe HTTP/1.1 client over per-host pools.

    with poolsvc.Client(max_per_host=20) as client:
        r = client.get("http://127.0.0.1:8080/items", timeout=2.0)
        r.raise_for_status()
        print(r.status, r.headers["content-type"], r.json())
        print(client.stats())

A host is (scheme, host, port); each has its own :class:`HostPool` (the service's
pool decisions, transport, TLS, breaker and fault injection) and the client caps
connections per host and in total. Requests are checked (URL, method, headers,
body) before anything is sent and rendered by :func:`workers.net.httpwire.build_request`,
the function that renders the service's; a bad one raises
:class:`~poolsvc.library.exceptions.InvalidRequest`. Redirects are not followed
(the adapters leave that to requests and httpx, which do).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import orjson

from poolsvc.library.exceptions import ClientError, InvalidRequest
from poolsvc.library.hostpool import Budget, HostPool, Timeout
from poolsvc.library.response import Response, check_timeout
from poolsvc.library.retry import Retry, retry_after
from poolsvc.library.roundtrip import Exchange
from poolsvc.library.routes import Prepared, Router
from poolsvc.library.transports import transport_for
from poolsvc.version import __version__
from workers.net.httpwire import DEFAULT_SUCCESS, IDEMPOTENT, parse_statuses, status_table
from workers.pool.breaker import BreakerSettings
from workers.pool.shard import PoolSettings
from workers.shared.injection import Injector, parse_fault

_UNSUPPORTED_FAULTS = frozenset({"half_open", "leak"})


class Client:
    """A pool of keep-alive connections and the calls that use it (see the module
    docstring and docs/library.md for every option)."""

    def __init__(
        self,
        *,
        max_per_host: int = 10,
        max_total: int = 100,
        timeout: float | Timeout | None = None,
        pool_block: bool = True,
        idle_timeout: float = 30.0,
        max_age: float = 0.0,
        max_requests: int = 0,
        validate_after: float = 0.1,
        backoff: tuple[float, float] = (0.05, 5.0),
        retries: int | Retry = 0,
        breaker: bool | BreakerSettings = True,
        faults: Iterable[Mapping[str, Any]] = (),
        seed: int = 0,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        tls_resume: bool = True,
        headers: Mapping[str, str] | None = None,
        user_agent: str = f"poolsvc/{__version__}",
        success_statuses: str = DEFAULT_SUCCESS,
    ) -> None:
        if max_per_host < 1 or max_total < 1:
            raise InvalidRequest("max_per_host", "limits must be >= 1")
        self._timeout = (
            Timeout()
            if timeout is None
            else timeout
            if isinstance(timeout, Timeout)
            else _timeout(timeout)
        )
        try:
            self._settings = PoolSettings(
                max_size=max_per_host, idle_timeout=idle_timeout, max_age=max_age,
                max_requests=max_requests, validate_after=validate_after,
                exhaustion="wait" if pool_block else "fail", wait_timeout=self._timeout.pool,
            )  # fmt: skip
            self._breaker = breaker if isinstance(breaker, BreakerSettings) else (
                BreakerSettings(enabled=bool(breaker)))  # fmt: skip
            self._success = status_table(parse_statuses(success_statuses))
        except ValueError as exc:
            raise InvalidRequest("settings", str(exc)) from None
        self._retry = retries if isinstance(retries, Retry) else Retry(total=retries)
        self._tls = (verify, cert, tls_resume)
        self._backoff = backoff
        self._seed = seed
        self._rng = random.Random(seed)
        self._router = Router(headers or {}, user_agent)
        self._budget = Budget(max_total)
        self._budget.reclaim = self._reclaim
        self._hosts: dict[tuple[str, str, int], HostPool] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._injector: Injector | None = None
        self.set_faults(faults)

    @property
    def timeout(self) -> Timeout:
        """The timeouts a call without its own uses."""
        return self._timeout

    # requests --------------------------------------------------------------------------
    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | str | None = None,
                json: Any = None, timeout: float | Timeout | None = None,
                stream: bool = False) -> Response:  # fmt: skip
        """Send one request and return its response (the body read whole unless
        ``stream``). Raises InvalidRequest before any I/O, else a ClientError of the
        failure's phase; statuses are not raised (``raise_for_status``)."""
        if json is not None:
            if body is not None:
                raise InvalidRequest("json", "give body or json, not both")
            try:
                body = orjson.dumps(json)
            except TypeError as exc:
                raise InvalidRequest("json", str(exc)) from None
            headers = {"Content-Type": "application/json", **(headers or {})}
        prepared = self._router.prepare(method, url, params, headers, body)
        limits = self._timeout if timeout is None else (
            timeout if isinstance(timeout, Timeout) else _timeout(timeout))  # fmt: skip
        retry = self._retry
        attempt = 0
        while True:
            try:
                response = self._send(prepared, limits, stream)
            except ClientError as exc:
                delay = retry_after(retry, attempt, prepared.method, exc, None, self._rng)
                if delay is None:
                    raise
            else:
                delay = retry_after(retry, attempt, prepared.method, None, response.status,
                                    self._rng)  # fmt: skip
                if delay is None:
                    return response
                response.close()
            attempt += 1
            time.sleep(delay)

    def _send(self, p: Prepared, limits: Timeout, stream: bool) -> Response:
        host = self._host(p.key)
        exchange = Exchange(host, p.data, p.method == "HEAD", p.method in IDEMPOTENT, limits,
                            self._success)  # fmt: skip
        reader = exchange.run()
        response = Response(exchange, reader, time.monotonic() - exchange.started)
        response.url, response.method = p.url, p.method
        if not stream:
            response.read()
            response.elapsed = time.monotonic() - exchange.started
        return response

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def head(self, url: str, **kw: Any) -> Response:
        return self.request("HEAD", url, **kw)

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> Response:
        return self.request("PUT", url, **kw)

    def patch(self, url: str, **kw: Any) -> Response:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any) -> Response:
        return self.request("DELETE", url, **kw)

    def options(self, url: str, **kw: Any) -> Response:
        return self.request("OPTIONS", url, **kw)

    # hosts -----------------------------------------------------------------------------
    def _host(self, key: tuple[str, str, int]) -> HostPool:
        host = self._hosts.get(key)
        if host is not None:
            return host
        with self._lock:
            if self._closed:
                raise InvalidRequest("client", "the client is closed")
            host = self._hosts.get(key)
            if host is None:
                transport = transport_for(key, *self._tls, handshake=self._timeout.connect)
                host = HostPool(key, len(self._hosts), transport, self._settings, self._budget,
                                self._breaker, self._injector, random.Random(
                                    f"{self._seed}:{len(self._hosts)}"), self._backoff)  # fmt: skip
                self._hosts[key] = host
        return host

    def _reclaim(self) -> bool:
        """Room under the total cap: the coldest idle connection of any host goes."""
        return any(host.close_coldest() for host in list(self._hosts.values()))

    def warm(self, url: str, connections: int) -> int:
        """Open up to ``connections`` idle connections to ``url``'s host now (before the
        first request pays for them); returns how many opened (failures are counted
        as ``connect_errors.<name>``)."""
        key = self._router.route(url)[0]
        return self._host(key).warm(connections, self._timeout)

    def set_faults(self, faults: Iterable[Mapping[str, Any]]) -> None:
        """Inject these faults from now on (the service's fault keys, names and seeds;
        ``target`` is a host's ordinal, in the order of first use); () clears them."""
        now = time.monotonic()
        try:
            table = [parse_fault(item, now, self._seed) for item in faults]
        except ValueError as exc:
            raise InvalidRequest("faults", str(exc)) from None
        for fault in table:
            if fault.kind in _UNSUPPORTED_FAULTS:
                raise InvalidRequest("faults", f"{fault.kind} acts on the service's event "
                                     "loop; the library injects reset, timeout, delay, "
                                     "connect_fail and close_idle")  # fmt: skip
        previous = self._injector
        self._injector = Injector(table, 0, previous) if table else None
        for host in self._hosts.values():
            host.injector = self._injector

    # observability ---------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per host (``scheme://host:port``): pool gauges, connection and request
        counters, errors by name and by phase, latency percentiles (us), the breaker."""
        from poolsvc.library.observe import host_stats

        return {f"{k[0]}://{k[1]}:{k[2]}": host_stats(h) for k, h in list(self._hosts.items())}

    def collector(self) -> Any:
        """A prometheus_client collector of this client's metrics, by the service's
        family names (``registry.register(client.collector())``)."""
        from poolsvc.library.collector import ClientCollector

        return ClientCollector(self)

    def hosts(self) -> list[HostPool]:
        return list(self._hosts.values())

    # lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every connection (busy ones too); the client refuses requests after."""
        with self._lock:
            self._closed = True
            hosts = list(self._hosts.values())
        for host in hosts:
            host.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Client {state} hosts={len(self._hosts)} {self._budget!r}>"


def _timeout(value: Any) -> Timeout:
    seconds = check_timeout(value)
    return Timeout(connect=seconds, read=seconds, pool=seconds)
