"""A target as the worker loop sees it: resolved address, prebuilt requests, its pool."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.http import IDEMPOTENT, build_request, host_header

if TYPE_CHECKING:
    from workers.connection import Connection
    from workers.load import Client
    from workers.pool import Pool


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

    @property
    def name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def resolve(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) of the first TCP address of ``host``; raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, _, _, _, addr = infos[0]
    return int(family), tuple(addr)


class Target:
    """Runtime state of one target inside one worker (not shared between processes)."""

    __slots__ = (
        "addr",
        "breaker_word",
        "consec",
        "consec_gen",
        "family",
        "head_only",
        "health_head_only",
        "health_request",
        "idempotent",
        "index",
        "last_fail",
        "last_ok",
        "ok_word",
        "pool",
        "request",
        "spec",
        "total",
    )

    def __init__(self, index: int, spec: TargetSpec, pool: Pool[Connection, Client]) -> None:
        self.index = index
        self.spec = spec
        self.family, self.addr = resolve(spec.host, spec.port)
        hh = host_header(spec.host, spec.port)
        self.request = build_request(
            spec.method, spec.path, hh, spec.headers, spec.body, spec.keep_alive
        )
        self.head_only = spec.method == "HEAD"
        self.idempotent = spec.method in IDEMPOTENT
        self.health_request = build_request(spec.health_method, spec.health_path, hh)
        self.health_head_only = spec.health_method == "HEAD"
        self.pool = pool
        self.last_ok = self.last_fail = 0.0
        self.consec = 0  # failures in a row on this target in this worker
        self.consec_gen = 0  # the breaker generation that streak belongs to
        self.total = (0, 0)  # the whole pool over all workers: (max, min), for re-splitting
        # Indexes into the shared words, set by the worker that owns this target:
        # its breaker's state word and its own `ok` counter (read on every request).
        self.breaker_word = self.ok_word = 0

    def __repr__(self) -> str:
        return f"<Target {self.index} {self.spec.name} {self.pool!r}>"
