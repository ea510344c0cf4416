"""A worker's audit of its own descriptors: what the kernel says against what we believe.

The *registry* is what the worker believes it owns:

- its pooled connections (``Worker.conns``: fd -> Connection, with state, target,
  created, last used, requests served);
- a few infrastructure descriptors (stdio, epoll, the dead-end sockets used for
  injection);
- *tombstones*: the last ``TOMBSTONES`` connections it closed, with their inode,
  so a descriptor still open after the registry dropped it can be recognised.

The *kernel's view* is every entry of ``/proc/self/fd`` (readlink gives its kind
and inode), plus ``psutil.Process().net_connections()`` for the TCP state and
the 4-tuple of each socket.

A socket descriptor open in the process but absent from the registry is a
**leak**. If its inode matches a tombstone, the report also says what the
registry believed (closed at T, for reason R).

Beyond leaks, the audit reports:

- CLOSE_WAIT sockets: the peer closed and we did not;
- half-open suspects: registered, ESTABLISHED, and not reading (the ``half_open``
  fault), or idle for longer than ``SUSPECT_IDLE_S``;
- sockets stuck CONNECTING past their deadline;
- the fd count against the baseline and against RLIMIT_NOFILE.

Cost: one listdir of ``/proc/self/fd``, one readlink per descriptor, and one
``net_connections`` call, which reads the namespace's TCP tables. The audit
measures its own duration and reports it. The supervisor audits workers one at a
time, so the load never stops everywhere at once.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import psutil

from workers.pool import connection as cx

if TYPE_CHECKING:
    from workers.pool.connection import Connection

TOMBSTONES: Final = 4096
SUSPECT_IDLE_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Tombstone:
    inode: int
    fd: int
    target: int
    created: float
    closed: float
    reason: str
    requests: int


class Registry:
    """The worker's memory of what it owned: baseline, tombstones, first sightings."""

    def __init__(self) -> None:
        self.baseline = 0  # descriptors open before the first connection (stdio, epoll)
        self.tombstones: deque[Tombstone] = deque(maxlen=TOMBSTONES)
        self.first_seen: dict[int, float] = {}  # unknown socket inode -> first audit that saw it

    def take_baseline(self) -> None:
        self.baseline = count_fds()

    def closed(self, conn: Connection, inode: int, reason: str, now: float) -> None:
        self.tombstones.append(
            Tombstone(inode, conn.fd, conn.target, conn.created, now, reason, conn.requests)
        )


class Reserve:
    """One spare descriptor (``/dev/null``), handed back for the length of an audit:
    a worker that ran out of descriptors (EMFILE, the ``leak`` fault) can still
    list its own and write its report. It is counted in the baseline."""

    def __init__(self) -> None:
        self.fd = self._open()

    @staticmethod
    def _open() -> int:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            yield
        finally:
            self.fd = self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"<Reserve fd={self.fd}>"


def count_fds() -> int:
    """Open descriptors of this process (the listing's own descriptor excluded)."""
    return len(os.listdir("/proc/self/fd")) - 1


def inode_of(fd: int) -> int:
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return 0


def _kernel_view() -> tuple[dict[int, tuple[str, int]], dict[int, Any]]:
    """fd -> (kind, inode) for every descriptor; fd -> psutil connection for sockets."""
    fds: dict[int, tuple[str, int]] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        kind, _, rest = link.partition(":")
        inode = int(rest.strip("[]")) if rest.startswith("[") and rest[1:-1].isdigit() else 0
        fds[int(name)] = (kind if rest else "file", inode)
    conns = {c.fd: c for c in psutil.Process().net_connections(kind="inet") if c.fd >= 0}
    return fds, conns


def _addr(a: Any) -> str:
    if not a:
        return ""
    host, port = a[0], a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def audit(
    conns: dict[int, Connection],
    infra: set[int],
    extra: int,
    registry: Registry,
    targets: list[str],
    now: float,
    connect_timeout: float,
) -> dict[str, Any]:
    """Compare the kernel's descriptors with ``conns`` and ``infra`` (descriptors we own
    that are not connections; ``extra`` of them were opened after the baseline)."""
    started = time.perf_counter()
    fds, tcp = _kernel_view()
    stones = {t.inode: t for t in registry.tombstones}
    leaked, close_wait, suspects, stuck = [], [], [], []
    for fd, (kind, inode) in sorted(fds.items()):
        info = tcp.get(fd)
        status = info.status if info else ""
        conn = conns.get(fd)
        if conn is None:
            if kind != "socket" or fd in infra:
                continue
            first = registry.first_seen.setdefault(inode, now)
            stone = stones.get(inode)
            if stone is not None:
                believed = (
                    f"CLOSED {now - stone.closed:.3f}s ago ({stone.reason}), target "
                    f"{targets[stone.target]}, {stone.requests} requests"
                )
            else:
                believed = "never registered"
            row: dict[str, Any] = {
                "fd": fd,
                "inode": inode,
                "tcp_state": status,
                "local": _addr(info.laddr) if info else "",
                "remote": _addr(info.raddr) if info else "",
                "age_s": round(now - (stone.created if stone else first), 3),
                "registry": believed,
            }
            leaked.append(row)
            continue
        where = {
            "fd": fd,
            "target": targets[conn.target],
            "state": conn.state,
            "age_s": round(now - conn.created, 3) if conn.created else 0.0,
            "idle_s": round(now - conn.last_used, 3) if conn.last_used else 0.0,
            "requests": conn.requests,
            "tcp_state": status,
        }
        if status == psutil.CONN_CLOSE_WAIT:
            close_wait.append(where)
        elif conn.state == cx.CONNECTING and now - conn.created > connect_timeout:
            stuck.append(where)
        elif status == psutil.CONN_ESTABLISHED and (
            conn.injected == "half_open"
            or (conn.state == cx.IDLE and now - conn.last_used > SUSPECT_IDLE_S)
        ):
            suspects.append(where)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "pid": os.getpid(),
        "fds_now": len(fds),
        "fds_baseline": registry.baseline,
        "fds_expected": registry.baseline + len(conns) + extra,
        "fd_limit": soft,
        "fd_headroom": soft - len(fds),
        "sockets": sum(1 for kind, _ in fds.values() if kind == "socket"),
        "registered": len(conns),
        "by_state": _count_states(conns),
        "leaked": leaked,
        "close_wait": close_wait,
        "half_open_suspects": suspects,
        "stuck_connecting": stuck,
        "cost_ms": round((time.perf_counter() - started) * 1000, 3),
        "incomplete": "",
    }


def incomplete(registry: Registry, registered: int, reason: str) -> dict[str, Any]:
    """The report of an audit that could not run: it says why, and never says clean."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "pid": os.getpid(),
        "fds_now": -1,
        "fds_baseline": registry.baseline,
        "fds_expected": -1,
        "fd_limit": soft,
        "fd_headroom": -1,
        "sockets": -1,
        "registered": registered,
        "by_state": {},
        "leaked": [],
        "close_wait": [],
        "half_open_suspects": [],
        "stuck_connecting": [],
        "cost_ms": 0.0,
        "incomplete": reason,
    }


def _count_states(conns: dict[int, Connection]) -> dict[str, int]:
    out: dict[str, int] = {}
    for conn in conns.values():
        out[conn.state] = out.get(conn.state, 0) + 1
    return out
