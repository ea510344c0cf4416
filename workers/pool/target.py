"""A target as the worker loop sees it: resolved address, prebuilt requests, its pool."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.net.httpwire import IDEMPOTENT, build_request, host_header
from workers.net.tls import Tls, TlsSpec
from workers.net.transport import Plain, Transport, Tuned
from workers.pool.sizing import Sizing

if TYPE_CHECKING:
    from workers.pool.client import Client
    from workers.pool.connection import Connection
    from workers.pool.shard import Pool


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """What to send where (validated by the config layer)."""

    host: str
    port: int
    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    keep_alive: bool = True
    health_method: str = "HEAD"
    health_path: str = "/health"
    user_agent: str = ""  # sent unless the headers hold a User-Agent
    tls: TlsSpec | None = None  # None: plain TCP
    nodelay: bool = True  # False: Nagle's algorithm left on
    split_writes: bool = False  # a request's head and body in two writes

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def default_port(self) -> int:
        """The scheme's port: the Host header leaves it out."""
        return 443 if self.tls is not None else 80


_LABEL = re.compile(r"\A(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def check_host(host: str) -> str:
    """``host`` as a resolvable name or IP literal (brackets around IPv6 dropped);
    raises ValueError, with a hint, for a URL, a host:port or anything else."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None:
        if bare != host and ip.version != 6:
            raise ValueError(f"{host!r}: only IPv6 addresses go in brackets")
        return bare
    if "://" in host or "/" in host:
        raise ValueError(f"{host!r} is a URL: give the host name alone, and --port/--path")
    if ":" in host:
        raise ValueError(f"{host!r} carries a port: give it as port (--port)")
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return host


def resolve(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) of the first TCP address of ``host``; raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, _, _, _, addr = infos[0]
    return int(family), tuple(addr)


class Target:
    """Runtime state of one target inside one worker (not shared between processes)."""

    __slots__ = (
        "addr",
        "block",
        "breaker_word",
        "consec",
        "consec_gen",
        "errors",
        "family",
        "handshake_timeout",
        "head_only",
        "health_head_only",
        "health_request",
        "hist",
        "idempotent",
        "index",
        "last_fail",
        "last_ok",
        "ok_word",
        "own",
        "pool",
        "request",
        "share",
        "size",
        "sizing",
        "spec",
        "total",
        "transport",
    )

    def __init__(
        self,
        index: int,
        spec: TargetSpec,
        pool: Pool[Connection, Client],
        transport: Transport | None = None,
    ) -> None:
        self.index = index
        self.spec = spec
        self.family, self.addr = resolve(spec.host, spec.port)
        # How every socket to this target is spoken: TLS when its spec says so.
        base: Transport = Tls(spec.tls) if spec.tls else Plain()
        if not spec.nodelay or spec.split_writes:  # the Nagle study's client, on request
            base = Tuned(base, nodelay=spec.nodelay, split=spec.split_writes)
        self.transport: Transport = transport or base
        self.handshake_timeout = spec.tls.handshake_timeout if spec.tls else 0.0
        hh = host_header(spec.host, spec.port, spec.default_port)
        ua = spec.user_agent
        self.request = build_request(
            spec.method, spec.path, hh, spec.headers, spec.body, spec.keep_alive, ua
        )
        self.size = len(self.request)  # read on every send: a partial write is n < size
        self.head_only = spec.method == "HEAD"
        self.idempotent = spec.method in IDEMPOTENT
        # The health check goes to the same virtual host as the requests.
        host = {k: v for k, v in spec.headers.items() if k.lower() == "host"}
        self.health_request = build_request(
            spec.health_method,
            spec.health_path,
            hh,
            host,
            user_agent=ua,
            keys=("health_check_method", "health_check_path", "headers"),
        )
        self.health_head_only = spec.health_method == "HEAD"
        self.pool = pool
        self.last_ok = self.last_fail = 0.0
        self.consec = 0  # failures in a row on this target in this worker
        self.consec_gen = 0  # the breaker generation that streak belongs to
        self.total = (0, 0)  # the whole pool over all workers: (max, min), for re-splitting
        # this worker's share of it (max, min); adaptive, the pool's max moves inside it
        self.share = (pool.settings.max_size, pool.settings.min_size)
        self.sizing: Sizing | None = None
        # Indexes into the shared words, set by the worker that owns this target:
        # its breaker's state word and its own `ok` counter (read on every request).
        self.breaker_word = self.ok_word = 0
        # Several targets: ``own`` is set and each keeps its own figures (outcomes,
        # errors by name, latency histogram) in its block at these indexes.
        self.own = False
        self.block = self.errors = self.hist = 0

    def __repr__(self) -> str:
        return f"<Target {self.index} {self.spec.name} {self.pool!r}>"
