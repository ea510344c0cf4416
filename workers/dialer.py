"""Connections open and close here: non-blocking connect, ``SO_ERROR``, eviction, refill.

The dialer owns the worker's map of open connections (fd -> :class:`Connection`)
and is the only part that creates or closes one, through the transport. A fresh
connection goes to the client it was opened for, else to the first waiter of its
pool, else to the idle list; a failed connect fails its client's request (phase
``connect``) or, for a warm-pool refill that no request waited for, counts a
connection error. Closing forgets the connection everywhere, counts the eviction
reason, and lets the pool serve a waiter and refill what it lost.

The faults that hit connections rather than requests happen here too:
``connect_fail`` (a real connect to a dead end), ``half_open`` and
``close_idle`` on idle connections, and ``leak`` at close.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Sequence
from typing import Any

from workers import stats as st
from workers.audit import Registry, inode_of
from workers.client import Client
from workers.connection import CLOSED, RESERVED, Connection
from workers.deadends import DeadEnds
from workers.errors import errno_name, oserror_name
from workers.loop import IN, OUT, Loop
from workers.state import RunState
from workers.target import Target
from workers.transport import Transport


class Dialer:
    """Opens, hands over and closes one worker's connections (see the module docstring).

    ``dispatch(client, conn)`` gets a fresh connection to the client it was opened
    for; ``fail(client, name, injected)`` fails the request of a client whose
    connect failed. The worker binds both."""

    __slots__ = (
        "connect_timeout",
        "conns",
        "dead_ends",
        "dispatch",
        "fail",
        "leaked",
        "loop",
        "registry",
        "rng",
        "run",
        "s",
        "targets",
        "transport",
    )

    def __init__(
        self,
        run: RunState,
        loop: Loop,
        transport: Transport,
        targets: Sequence[Target],
        slot: Any,
        connect_timeout: float,
        rng: random.Random,
    ) -> None:
        self.run = run
        self.loop = loop
        self.transport = transport
        self.targets = targets
        self.s = slot
        self.connect_timeout = connect_timeout
        self.rng = rng
        self.conns: dict[int, Connection] = {}
        self.dead_ends = DeadEnds()
        self.leaked: list[Any] = []  # sockets kept open by the `leak` fault, on purpose
        self.registry = Registry()
        self.dispatch: Callable[[Client, Connection], None] = _unbound
        self.fail: Callable[[Client, str, str], None] = _unbound

    def connect(self, target: Target, owner: Client | None) -> None:
        """Start a handshake; ``owner`` gets the connection, else it refills the pool."""
        self.s[st.CONN_ATTEMPTED] += 1
        transport = self.transport
        try:
            sock = transport.open(target.family)
        except OSError as exc:
            self._connect_error(target, owner, oserror_name(exc))
            return
        conn = Connection(sock, target.index, self.s, transport.streams(sock))
        conn.owner = owner
        addr = target.addr
        injector = self.run.injector
        if injector.any:
            fault = injector.on_connection("connect_fail", target.index, self.run.now)
            if fault is not None:  # really connect somewhere that refuses or stays silent
                self.s[st.INJECTED["connect_fail"]] += 1
                conn.injected = "connect_fail"
                mode = "refusing" if fault.param == 0 else "silent"
                addr = self.dead_ends.address(target.family, mode)
        err = transport.connect(sock, addr)
        if err and err != errno.EINPROGRESS:
            transport.close(sock)
            conn.fire("close")
            self._connect_error(target, owner, errno_name(err), conn.injected)
            return
        self.conns[conn.fd] = conn
        conn.inode = inode_of(conn.fd)
        self.loop.add(conn.fd, OUT)
        self.loop.deadlines.arm(conn, self.run.now + self.connect_timeout)

    def connected(self, conn: Connection) -> None:
        """The socket of a connect became writable: connected, failed, or not yet."""
        err = self.transport.connected(conn.sock)
        if err == errno.EINPROGRESS:
            return  # spurious wakeup; the handshake is still going
        if err:
            self.connect_failed(conn, errno_name(err))
            return
        self.loop.deadlines.disarm(conn)
        self.loop.set(conn.fd, IN)
        conn.fire("connected")
        self.s[st.CONN_CREATED] += 1
        owner: Client | None = conn.owner
        conn.owner = None
        pool = self.targets[conn.target].pool
        waiter = pool.connected(conn, self.run.now, owner is not None, self.rng.random())
        if owner is not None:
            self.dispatch(owner, conn)
        elif waiter is not None:
            self.loop.deadlines.disarm(waiter)
            self.dispatch(waiter, conn)

    def connect_failed(self, conn: Connection, name: str) -> None:
        """The handshake failed (``name``: errno name or connect_timeout)."""
        conn.fire("close")
        self.loop.deadlines.disarm(conn)
        del self.conns[conn.fd]
        self.transport.close(conn.sock)
        self._connect_error(self.targets[conn.target], conn.owner, name, conn.injected)

    def _connect_error(
        self, target: Target, owner: Client | None, name: str, injected: str = ""
    ) -> None:
        target.pool.connect_failed(self.run.now)
        if owner is not None:
            self.fail(owner, name, injected)
        else:  # a refill failed: a connection error, no request was lost
            self.s[st.CONNECT_ERROR[name]] += 1
            self.s[st.PHASE["connect"]] += 1

    def close(self, conn: Connection, reason: str, refill: bool = True) -> None:
        """Close ``conn`` and forget it; ``reason`` is counted as an eviction ('' = none).

        ``refill`` False: the caller hands the freed slot to a request itself (a fresh
        connection for a re-send), so the warm-pool refill must not take it first.

        Idempotent: a connection is open while the fd map points at it (a DRAINING
        connection reaches CLOSED through the table before its socket is closed here).
        """
        if self.conns.get(conn.fd) is not conn:
            return
        run = self.run
        if conn.state is RESERVED and conn.owner is not None:
            conn.owner.conn = None  # its (delayed) request looks for another connection
        if conn.state is not CLOSED:
            conn.fire("close")
        self.loop.deadlines.disarm(conn)
        del self.conns[conn.fd]
        self.registry.closed(conn, conn.inode, reason or "shutdown", run.now)
        target = self.targets[conn.target]
        if not (run.injector.any and not run.stopping and self._leak(conn)):
            self.transport.close(conn.sock)
        target.pool.discard(conn)
        if reason:
            self.s[st.EVICT[reason]] += 1
        if not run.stopping:
            waiter = target.pool.serve_waiter(run.now)
            if waiter is not None:
                self.loop.deadlines.disarm(waiter)
                waiter.fire("connect")
                self.connect(target, waiter)
            if refill:
                self.refill(target)  # a warm pool replaces what it lost at once (if no backoff)

    def refill(self, target: Target) -> None:
        """Open what the target's pool lacks of its minimum (none while backing off)."""
        for _ in range(target.pool.refill(self.run.now)):
            self.connect(target, None)

    def _leak(self, conn: Connection) -> bool:
        """leak: keep the socket open but out of every registry (the FD audit must see it)."""
        if not self.run.injector.on_connection("leak", conn.target, self.run.now):
            return False
        self.s[st.INJECTED["leak"]] += 1
        self.loop.remove(conn.fd)
        self.leaked.append(conn.sock)
        return True

    def inject_idle(self, now: float) -> None:
        """half_open / close_idle: each idle connection draws once per fault table."""
        injector, generation = self.run.injector, self.run.fault_gen
        for target in self.targets:
            for conn in list(target.pool.idle):
                if conn.drawn == generation or conn.injected:
                    continue
                conn.drawn = generation
                if injector.on_connection("half_open", target.index, now):
                    self.s[st.INJECTED["half_open"]] += 1
                    conn.injected = "half_open"
                    self.loop.set(conn.fd, 0)  # the peer is "gone": nothing arrives, not even FIN
                elif injector.on_connection("close_idle", target.index, now):
                    self.s[st.INJECTED["close_idle"]] += 1
                    conn.injected = "close_idle"
                    self.transport.shut(conn.sock)  # behind the pool's back; found for real

    def close_all(self) -> None:
        """Shutdown: close every connection still open (counted ``shutdown``)."""
        for conn in list(self.conns.values()):
            if conn.state is not CLOSED:
                self.s[st.SHUTDOWN] += 1
                self.close(conn, "")

    def __repr__(self) -> str:
        return f"<Dialer {self.transport!r} conns={len(self.conns)} leaked={len(self.leaked)}>"


def _unbound(*args: Any) -> None:
    raise RuntimeError("a Dialer's dispatch and fail are bound by the worker")
