"""One host's pool for threads: the service's pool decisions under a lock, the I/O outside it.

A :class:`HostPool` is what a worker's pool shard is for one target, made
thread-safe: :class:`workers.pool.shard.Pool` decides every checkout and check-in (as
the typed actions the worker's loop performs) while the host's lock is held, and
the thread that asked performs the action with the lock released: it probes,
evicts, dials (:func:`poolsvc.library.wire.dial`), or waits on its
:class:`Waiter` for a connection handed over by another thread's check-in. The
pool's guarantees hold unchanged: LIFO reuse, validation on checkout (a zero-wait
probe after ``validate_after``), idle and age limits, backoff with full jitter
after failed connects, FIFO waiters with a deadline.

The host also keeps its circuit breaker (:class:`workers.pool.breaker.Breaker`, fed per
request instead of per supervisor tick) and its counters (:class:`HostMeter`).
The client's total connection cap is a :class:`Budget` shared by every host.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from poolsvc.library.exceptions import BreakerOpen, ClientError, PoolClosed, error_for
from poolsvc.library.hostmeter import HostMeter
from poolsvc.library.wire import Dialed, dial, resolve
from workers.exchange.dialer import OURS
from workers.net.deadends import DeadEnds
from workers.net.transport import Transport
from workers.pool.backoff import Backoff
from workers.pool.breaker import CLOSED, HALF_OPEN, Breaker, BreakerSettings
from workers.pool.connection import ON, Connection
from workers.pool.shard import (
    BackingOff,
    Close,
    Connect,
    Evict,
    Exhausted,
    Handoff,
    Health,
    Pool,
    PoolSettings,
    Probe,
    Use,
    Wait,
)
from workers.shared.injection import CONNECT_MODES, Injector

_CHECKOUT: Final = ON["checkout"]
REMOTE_PHASES: Final = frozenset({"connect", "tls", "write", "read", "injected"})


@dataclass(frozen=True, slots=True)
class Timeout:
    """Seconds: ``connect`` (TCP, and the TLS handshake after it), ``read`` (between
    two bytes of a response, and for room to write), ``pool`` (waiting for a
    connection when the host or the total cap is full)."""

    connect: float = 5.0
    read: float = 30.0
    pool: float = 5.0


class Waiter:
    """A thread queued for a connection: handed one (``conn``), told to open one
    (``connect``: its slot is reserved), or woken by ``close``."""

    __slots__ = ("closed", "conn", "connect", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.conn: Connection | None = None
        self.connect = False
        self.closed = False


class Budget:
    """The client's cap on connections over all hosts. ``reclaim`` (set by the client)
    closes the coldest idle connection of some host to make room, False if none."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()
        self.reclaim: Any = lambda: False

    def take(self, deadline: float) -> bool:
        while True:
            with self.cond:
                if self.used < self.limit:
                    self.used += 1
                    return True
            if self.reclaim():
                continue
            with self.cond:
                left = deadline - time.monotonic()
                if self.used >= self.limit and (left <= 0 or not self.cond.wait(left)):
                    return False

    def give(self) -> None:
        with self.cond:
            self.used -= 1
            self.cond.notify()

    def __repr__(self) -> str:
        return f"<Budget {self.used}/{self.limit}>"


class HostPool:
    """The connections to one (scheme, host, port); see the module docstring."""

    def __init__(self, key: tuple[str, str, int], index: int, transport: Transport,
                 settings: PoolSettings, budget: Budget, breaker: BreakerSettings,
                 injector: Injector | None, rng: random.Random,
                 backoff: tuple[float, float]) -> None:  # fmt: skip
        self.key, self.index, self.transport = key, index, transport
        self.lock = threading.Lock()
        self.pool: Pool[Connection, Waiter] = Pool(settings, Backoff(*backoff, rng))
        self.budget = budget
        self.meter = HostMeter()
        self.breaker = Breaker(breaker, rng, time.monotonic())
        self.permits, self.trial_ok, self.trial_fail, self.consecutive = 0, 0, 0, 0
        self.injector = injector
        self.dead_ends: DeadEnds | None = None
        self.conns: set[Connection] = set()
        self.closed = False
        self.next_sweep = 0.0
        self.address: tuple[int, tuple[Any, ...]] | None = None
        self.last_connect_error = ""

    # checkout ------------------------------------------------------------------------
    def checkout(self, timeout: Timeout, fresh: bool = False) -> tuple[Connection, bool]:
        """A RESERVED connection for this thread, and whether it served before.
        ``fresh``: a new one (the one re-send after a stale connection). Raises a
        pool, connect or TLS error (not counted: the caller counts the request)."""
        deadline = time.monotonic() + timeout.pool
        waiter = Waiter()
        while True:
            now = time.monotonic()
            with self.lock:
                if self.closed:
                    raise PoolClosed("cancelled", "the client is closed")
                expired = self._sweep(now)
                if fresh:
                    if not self.pool.reserve_connect():
                        fresh = False
                        continue
                    action: Any = Connect()
                else:
                    action = self.pool.checkout(now, waiter)
            for conn, reason in expired:
                self._close(conn, reason)
            if isinstance(action, Use):
                return self._take(action.conn, False), True
            if isinstance(action, Probe | Health):
                conn = self._take(action.conn, True)
                reason = self.transport.probe(conn.sock)
                if not reason:
                    return conn, True
                self.discard(conn, reason)
            elif isinstance(action, Evict):
                self.discard(action.conn, action.reason)
            elif isinstance(action, Connect):
                return self._connect(timeout, deadline), False
            elif isinstance(action, Wait):
                got: tuple[Connection, bool] | None = self._wait(waiter, deadline, timeout)
                if got is not None:
                    return got
                waiter = Waiter()
            elif isinstance(action, BackingOff):
                if action.until >= deadline:
                    raise error_for("connect", self.last_connect_error or "EOTHER",
                                    f"connects back off for {action.until - now:.3f}s")  # fmt: skip
                time.sleep(action.until - now)
            elif isinstance(action, Exhausted):
                raise error_for("pool", "pool_exhausted", f"{self.pool.settings.max_size} in use")

    def _take(self, conn: Connection, probe: bool) -> Connection:
        """An idle connection checked out: the close_idle fault may hit it first."""
        conn.state = _CHECKOUT[conn.state]
        inj = self.injector
        if inj is not None and inj.on_connection("close_idle", self.index, time.monotonic()):
            with self.lock:
                self.meter.injected("close_idle")
            self.transport.shut(conn.sock)  # behind the pool's back: the probe must see it
        return conn

    def _wait(
        self, waiter: Waiter, deadline: float, timeout: Timeout
    ) -> tuple[Connection, bool] | None:
        if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
            with self.lock:
                timed_out = self.pool.cancel_wait(waiter)
            if timed_out:
                raise error_for("pool", "pool_timeout", f"no connection in {timeout.pool:g}s")
            # Served as the wait ran out: the thread that served it sets the event just
            # after it let go of the lock (a connection handed over must not be lost).
            waiter.event.wait()
        if waiter.closed:
            raise PoolClosed("cancelled", "the client was closed while waiting")
        if waiter.conn is not None:
            conn = waiter.conn
            conn.state = _CHECKOUT[conn.state]
            return conn, True
        if waiter.connect:
            return self._connect(timeout, deadline), False
        return None

    def _connect(self, timeout: Timeout, deadline: float) -> Connection:
        """Dial for a reserved slot, within the client's total cap."""
        if not self.budget.take(deadline):
            with self.lock:
                self.pool.unreserve()
            raise error_for("pool", "pool_timeout", "the client's total connection cap is in use")
        try:
            dialed = self._dial(timeout)
        except ClientError as exc:
            self.budget.give()
            with self.lock:
                self.pool.connect_failed(time.monotonic())
                if exc.phase in ("connect", "injected"):
                    self.last_connect_error = exc.name
                waiter = self._serve_waiter()
            if waiter is not None:
                waiter.event.set()
            raise
        conn = dialed.conn
        with self.lock:
            self.meter.connected(dialed.connect_s, dialed.tls_s, self.transport.handshakes,
                                 dialed.offered, dialed.resumed)  # fmt: skip
            self.pool.connected(conn, time.monotonic(), owned=True, jitter=random.random())
            self.conns.add(conn)
            closed = self.closed
        if closed:
            self._close(conn, "resized")
            raise PoolClosed("cancelled", "the client was closed while connecting")
        conn.state = _CHECKOUT[conn.state]
        return conn

    def _dial(self, timeout: Timeout) -> Dialed:
        with self.lock:
            self.meter.attempted()
        if self.address is None:
            self.address = resolve(self.key[1], self.key[2])
        family, addr = self.address
        inj = self.injector
        fault = inj.on_connection("connect_fail", self.index, time.monotonic()) if inj else None
        if fault is not None:
            with self.lock:
                self.meter.injected("connect_fail")
            if self.dead_ends is None:
                self.dead_ends = DeadEnds()
            mode = "silent" if CONNECT_MODES[fault.param] == "timeout" else "refused"
            addr = self.dead_ends.address(family, mode)
        return dial(self.transport, family, addr, timeout.connect, timeout.connect, self.index,
                    self.meter.meter, injected=fault is not None)  # fmt: skip

    def warm(self, n: int, timeout: Timeout) -> int:
        """Open up to ``n`` connections into the idle list now (fewer when the host's or
        the total cap is reached); a failed one counts ``connect_errors.<name>``."""
        opened = 0
        for _ in range(n):
            with self.lock:
                if self.closed or not self.pool.reserve_connect():
                    break
            if not self.budget.take(time.monotonic()):
                with self.lock:
                    self.pool.unreserve()
                break
            try:
                dialed = self._dial(timeout)
            except ClientError as exc:
                self.budget.give()
                with self.lock:
                    self.pool.connect_failed(time.monotonic())
                    self.meter.connect_error(exc.name)
                break
            conn = dialed.conn
            with self.lock:
                self.meter.connected(dialed.connect_s, dialed.tls_s, self.transport.handshakes,
                                     dialed.offered, dialed.resumed)  # fmt: skip
                self.conns.add(conn)
                waiter = self.pool.connected(conn, time.monotonic(), owned=False)
            if waiter is not None:
                waiter.conn = conn
                waiter.event.set()
            opened += 1
        return opened

    # check-in and close ----------------------------------------------------------------
    def checkin(self, conn: Connection, keep_alive: bool) -> None:
        """The response on ``conn`` was read to its end: keep it, hand it to a waiter,
        or close it."""
        with self.lock:
            if self.closed:
                outcome: Any = None
            else:
                outcome = self.pool.checkin(conn, time.monotonic(), keep_alive)
        if outcome is None:
            self._close(conn, "")
        elif isinstance(outcome, Handoff):
            outcome.waiter.conn = conn
            outcome.waiter.event.set()
        elif isinstance(outcome, Close):
            self._close(conn, outcome.reason)

    def discard(self, conn: Connection, reason: str) -> None:
        """Close ``conn`` (a failure on it, or an eviction ``reason``) wherever it is."""
        with self.lock:
            self.pool.discard(conn)
        self._close(conn, reason)

    def _close(self, conn: Connection, reason: str) -> None:
        with self.lock:
            if conn.state == "CLOSED":
                return
            conn.fire("close")
            known = conn in self.conns
            self.conns.discard(conn)
            if reason:
                self.meter.evicted(reason)
            else:
                self.meter.shutdown()
            waiter = self._serve_waiter()
        self.transport.close(conn.sock, notify=reason in OURS)
        if known:
            self.budget.give()
        if waiter is not None:
            waiter.event.set()

    def _serve_waiter(self) -> Waiter | None:
        """(Lock held) a queued thread may open the connection a close made room for."""
        waiter = self.pool.serve_waiter(time.monotonic())
        if waiter is not None:
            waiter.connect = True
        return waiter

    def _sweep(self, now: float) -> list[tuple[Connection, str]]:
        """(Lock held) idle connections past their limits, at most once a second."""
        if now < self.next_sweep:
            return []
        self.next_sweep = now + 1.0
        return self.pool.sweep(now)

    def close_coldest(self) -> bool:
        """Close the idle connection unused the longest (the total cap needs room)."""
        with self.lock:
            idle = self.pool.idle
            if not idle:
                return False
            conn = idle.popleft()
        self._close(conn, "resized")
        return True

    def close(self) -> None:
        """Close every connection, busy ones too; wake every waiter (PoolClosed)."""
        with self.lock:
            self.closed = True
            conns = list(self.conns)
            waiters = list(self.pool.waiters)
            self.pool.waiters.clear()
            self.pool.idle.clear()
        for conn in conns:
            self._close(conn, "")
        for waiter in waiters:
            waiter.closed = True
            waiter.event.set()
        if self.dead_ends is not None:
            self.dead_ends.close()

    # the breaker -----------------------------------------------------------------------
    def admit(self, now: float) -> int:
        """0 to go on, a generation when admitted as a half-open trial; raises
        BreakerOpen (counted here: the request never had a connection)."""
        with self.lock:
            b = self.breaker
            permits = b.tick(now, self.trial_ok, self.trial_fail)
            if permits:
                self.permits, self.trial_ok, self.trial_fail = permits, 0, 0
            if b.state == CLOSED:
                return 0
            if b.state == HALF_OPEN and self.permits > 0:
                self.permits -= 1
                return b.generation
            self.meter.failed("breaker", "breaker_open", False, 0.0)
        raise BreakerOpen("breaker_open", f"{self.key[1]}:{self.key[2]} is {b.state}")

    def outcome(self, now: float, ok: bool, trial: int) -> None:
        """(Lock held) a request's result for the breaker and the backoff."""
        b = self.breaker
        if trial and trial == b.generation:
            self.trial_ok += ok
            self.trial_fail += not ok
        if ok:
            self.consecutive = 0
            if self.pool.backoff.attempt:
                self.pool.backoff.success()
        else:
            self.consecutive += 1
        b.observe(now, int(ok), int(not ok), self.consecutive)
        if b.state != CLOSED:
            b.tick(now, self.trial_ok, self.trial_fail)

    def __repr__(self) -> str:
        scheme, host, port = self.key
        return f"<HostPool {scheme}://{host}:{port} {self.pool!r} breaker={self.breaker.state}>"
