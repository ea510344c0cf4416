"""Connections open and close here: non-blocking connect, ``SO_ERROR``, TLS, eviction, refill.

The dialer owns the worker's maps of open connections (fd -> :class:`Connection`:
every one, and the established ones the loop serves directly) and is the only
part that creates or closes one, through its target's transport. After the TCP
connect (its time recorded), a TLS target's transport wraps the socket and the
connection is HANDSHAKING until the handshake is done (its time recorded, full
and resumed apart) or fails. A fresh connection goes to the client it was
opened for, else to the first waiter of its pool, else to the idle list; a
failed connect or handshake fails its client's request (phase ``connect`` or
``tls``) or, for a warm-pool refill that no request waited for, counts a
connection error. Closing forgets the connection everywhere, counts the
eviction reason, and lets the pool serve a waiter and refill what it lost.

The faults that hit connections rather than requests happen here too:
``connect_fail`` (a real connect to a dead end), ``half_open`` and
``close_idle`` on idle connections, and ``leak`` at close.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Sequence
from typing import Any, Final

from workers.exchange.fdaudit import Registry, inode_of
from workers.loop.eventloop import IN, OUT, Loop
from workers.loop.ports import Peers
from workers.loop.runstate import RunState
from workers.net.deadends import DeadEnds
from workers.net.tls import WANT_READ
from workers.pool.client import Client
from workers.pool.connection import CLOSED, HANDSHAKING, RESERVED, Connection
from workers.pool.target import Target
from workers.shared.errors import errno_name, oserror_name
from workers.shared.meter import Meter

#: closes we decide, the peer still talking: an orderly close (TLS: close_notify)
OURS: Final = frozenset({"", "idle_timeout", "max_age", "resized"})


class Dialer:
    """Opens, hands over and closes one worker's connections (see the module docstring).

    A fresh connection goes to the client it was opened for
    (``peers.issuing.dispatch``); the request of a client whose connect or handshake
    failed is settled by ``peers.settling.open_failed``. Every count goes to ``meter``."""

    __slots__ = (
        "connect_timeout",
        "conns",
        "dead_ends",
        "leaked",
        "loop",
        "meter",
        "peers",
        "ready",
        "registry",
        "rng",
        "run",
        "targets",
    )

    def __init__(
        self,
        run: RunState,
        loop: Loop,
        targets: Sequence[Target],
        meter: Meter,
        peers: Peers,
        connect_timeout: float,
        rng: random.Random,
    ) -> None:
        self.run = run
        self.loop = loop
        self.targets = targets
        self.meter = meter
        self.peers = peers
        self.connect_timeout = connect_timeout
        self.rng = rng
        self.conns: dict[int, Connection] = {}  # every open connection
        # The established ones: the loop looks an event's fd up here, so a connection
        # still opening is found on the miss path, and the loop pays no state check
        # per request for it (speed).
        self.ready: dict[int, Connection] = {}
        self.dead_ends = DeadEnds()
        self.leaked: list[Any] = []  # sockets kept open by the `leak` fault, on purpose
        self.registry = Registry()

    def connect(self, target: Target, owner: Client | None) -> None:
        """Start a handshake; ``owner`` gets the connection, else it refills the pool."""
        self.meter.attempted()
        transport = target.transport
        try:
            sock = transport.open(target.family)
        except OSError as exc:
            self._connect_error(target, owner, "connect", oserror_name(exc))
            return
        # A TLS connection gets its streams once it is wrapped (connected, below).
        streams = None if transport.handshakes else transport.streams(sock)
        conn = Connection(sock, target.index, self.meter, streams)
        conn.owner = owner
        addr = target.addr
        injector = self.run.injector
        if injector.any:
            fault = injector.on_connection("connect_fail", target.index, self.run.now)
            if fault is not None:  # really connect somewhere that refuses or stays silent
                self.meter.injected("connect_fail")
                conn.injected = "connect_fail"
                mode = "refusing" if fault.param == 0 else "silent"
                addr = self.dead_ends.address(target.family, mode)
        conn.opened = self.run.clock()
        err = transport.connect(sock, addr)
        if err and err != errno.EINPROGRESS:
            transport.close(sock)
            conn.fire("close")
            self._connect_error(target, owner, "connect", errno_name(err), conn.injected)
            return
        self.conns[conn.fd] = conn
        conn.inode = inode_of(conn.fd)
        self.loop.add(conn.fd, OUT)
        self.loop.deadlines.arm(conn, self.run.now + self.connect_timeout)

    def connected(self, conn: Connection) -> None:
        """An event on a connection still opening: its connect finished (or failed), or
        its TLS handshake can take a step."""
        if conn.state is HANDSHAKING:
            self._handshake(conn)
            return
        target = self.targets[conn.target]
        transport = target.transport
        err = transport.connected(conn.sock)
        if err == errno.EINPROGRESS:
            return  # spurious wakeup; the handshake is still going
        if err:
            self.connect_failed(conn, errno_name(err))
            return
        now = self.run.clock()
        self.meter.connected_in(int((now - conn.opened) * 1_000_000))
        if not transport.handshakes:
            conn.fire("connected")
            self._established(conn)
            return
        conn.fire("secure")
        conn.sock, offered = transport.wrap(conn.sock)
        conn.send, conn.recv = transport.streams(conn.sock)
        self.meter.tls_offered(offered)
        conn.opened = now
        self.loop.deadlines.arm(conn, self.run.now + target.handshake_timeout)
        self._handshake(conn)

    def _handshake(self, conn: Connection) -> None:
        """One step of a TLS handshake: wait for the socket, fail, or be done."""
        transport = self.targets[conn.target].transport
        try:
            want = transport.handshake(conn.sock)
        except OSError as exc:  # ssl.SSLError included: named by what it was (tls_*)
            self.connect_failed(conn, oserror_name(exc), "tls")
            return
        if want:
            self.loop.set(conn.fd, IN if want == WANT_READ else OUT)
            return
        us = int((self.run.clock() - conn.opened) * 1_000_000)
        self.meter.handshake(us, bool(getattr(conn.sock, "session_reused", False)))
        conn.fire("secured")
        self._established(conn)

    def _established(self, conn: Connection) -> None:
        """The connection is usable: the loop serves it, and its pool takes it."""
        self.loop.deadlines.disarm(conn)
        self.loop.set(conn.fd, IN)
        self.ready[conn.fd] = conn
        self.meter.created()
        owner: Client | None = conn.owner
        conn.owner = None
        pool = self.targets[conn.target].pool
        waiter = pool.connected(conn, self.run.now, owner is not None, self.rng.random())
        if owner is not None:
            self.peers.issuing.dispatch(owner, conn)
        elif waiter is not None:
            self.loop.deadlines.disarm(waiter)
            self.peers.issuing.dispatch(waiter, conn)

    def connect_failed(self, conn: Connection, name: str, phase: str = "connect") -> None:
        """The connect or the TLS handshake failed (``name``: what it was; a timeout is
        connect_timeout or tls_handshake_timeout)."""
        conn.fire("close")
        self.loop.deadlines.disarm(conn)
        del self.conns[conn.fd]
        target = self.targets[conn.target]
        target.transport.close(conn.sock)
        self._connect_error(target, conn.owner, phase, name, conn.injected)

    def _connect_error(
        self, target: Target, owner: Client | None, phase: str, name: str, injected: str = ""
    ) -> None:
        target.pool.connect_failed(self.run.now)
        if owner is not None:
            self.peers.settling.open_failed(owner, phase, name, injected)
        else:  # a refill failed: a connection error, no request was lost
            self.meter.connect_error(phase, name)

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
        self.ready.pop(conn.fd, None)
        self.registry.closed(conn, conn.inode, reason or "shutdown", run.now)
        target = self.targets[conn.target]
        if not (run.injector.any and not run.stopping and self._leak(conn)):
            target.transport.close(conn.sock, reason in OURS)
        target.pool.discard(conn)
        if reason:
            self.meter.evicted(reason)
        if not run.stopping:
            self.serve_waiters(target, 1)
            if refill:
                self.refill(target)  # a warm pool replaces what it lost at once (if no backoff)

    def serve_waiters(self, target: Target, most: int = 1_000_000) -> None:
        """Connect for requests waiting on ``target``'s pool while it has room."""
        for _ in range(most):
            waiter = target.pool.serve_waiter(self.run.now)
            if waiter is None:
                return
            self.loop.deadlines.disarm(waiter)
            waiter.fire("connect")
            self.connect(target, waiter)

    def refill(self, target: Target) -> None:
        """Open what the target's pool lacks of its minimum (none while backing off)."""
        for _ in range(target.pool.refill(self.run.now)):
            self.connect(target, None)

    def _leak(self, conn: Connection) -> bool:
        """leak: keep the socket open but out of every registry (the FD audit must see it)."""
        if not self.run.injector.on_connection("leak", conn.target, self.run.now):
            return False
        self.meter.injected("leak")
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
                    self.meter.injected("half_open")
                    conn.injected = "half_open"
                    self.loop.set(conn.fd, 0)  # the peer is "gone": nothing arrives, not even FIN
                elif injector.on_connection("close_idle", target.index, now):
                    self.meter.injected("close_idle")
                    conn.injected = "close_idle"
                    target.transport.shut(conn.sock)  # behind the pool's back; found for real

    def close_all(self) -> None:
        """Shutdown: close every connection still open (counted ``shutdown``)."""
        for conn in list(self.conns.values()):
            if conn.state is not CLOSED:
                self.meter.shutdown()
                self.close(conn, "")

    def __repr__(self) -> str:
        return f"<Dialer conns={len(self.conns)} ready={len(self.ready)} leaked={len(self.leaked)}>"
