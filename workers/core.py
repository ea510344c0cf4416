"""The worker's state and its upkeep: what it owns, how connections open and close,
and what happens on every tick.

A worker is one object over one shared state, built in layers so that each
module stays readable. Each layer is a class that extends the one below:

- :class:`WorkerCore` (here) owns the state and does what is not on the path of
  a single request:
  - opening and closing connections (non-blocking connect, ``SO_ERROR``,
    eviction, warm-pool refill);
  - the per-tick duties: idle sweep, supervisor controls, the fault table and
    the faults that hit idle sockets, FD audits, publishing gauges, draining.
- :mod:`workers.failures`: a failed request is re-sent or counted.
- :mod:`workers.requests`: target, breaker, pool decision, send.
- :mod:`workers.responses`: read, count, keep or check in.
- :mod:`workers.loop`: the event loop. Its :class:`~workers.loop.Worker` is the
  class to use.

A lower layer calls up in a few places: a fresh connection is handed to its
requester (:meth:`_dispatch`), a failed connect fails its request
(:meth:`_fail`), and a re-sent request looks for a connection (:meth:`_acquire`).
These are declared here and implemented above.
"""

from __future__ import annotations

import errno
import math
import random
import select
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psutil

from workers import connection as cx
from workers import load, shm
from workers import stats as st
from workers.admission import SharedView
from workers.audit import Registry, Reserve, audit, incomplete, inode_of
from workers.connection import Connection
from workers.errors import errno_name, oserror_name
from workers.http import DEFAULT_SUCCESS, parse_statuses, status_table
from workers.injection import Injector
from workers.load import Bounds, Client
from workers.target import Target
from workers.timers import Deadlines

TICK: Final = 0.1  # seconds between gauge publishes, idle sweeps and refills
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """Timeouts in seconds."""

    connect_timeout: float = 1.0
    read_timeout: float = 5.0
    drain_timeout: float = 5.0
    retry_stale: bool = True
    count_5xx: bool = True  # 5xx responses count as failures toward the breaker
    injected_count_for_breaker: bool = True  # injected failures feed the breaker too
    max_header_bytes: int = 32768  # a longer header block fails its request
    success: bytes = status_table(parse_statuses(DEFAULT_SUCCESS))  # by status code: 1 = ok


class WorkerCore:
    """The worker's state, connection lifecycle and per-tick upkeep (see the module
    docstring); :class:`workers.loop.Worker` is the class to use."""

    def __init__(
        self,
        targets: Sequence[Target],
        bounds: Bounds,
        settings: LoopSettings,
        shared: SharedView,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        watchdog: Callable[[Any], None] | None = None,  # called with the worker each tick
        end_at: float = 0.0,
        report: Callable[[str, dict[str, Any]], None] | None = None,
        weights: Sequence[int] = (1,),
    ) -> None:
        self.targets = list(targets)
        # smooth weighted round-robin over the targets (nginx's): deterministic, even spacing
        self.weights = list(weights) if len(weights) == len(self.targets) else [1] * len(targets)
        self.wrr = [0] * len(self.targets)
        self.workers_seen = 0  # the worker count our pool shares were last split for
        self.bounds = bounds
        self.settings = settings
        self.shared = shared
        self.w = shared.words
        for t in self.targets:
            t.breaker_word = shared.brk[t.index]
            t.ok_word = shared.targets[t.index] + shm.T_OK
            if len(self.targets) > 1:  # each target keeps its own figures too
                t.own = True
                t.block = shared.targets[t.index]
                t.errors, t.hist = t.block + shm.T_ERRORS, t.block + shm.T_HIST
        self.s = shared.slot
        self.max_head = settings.max_header_bytes
        self.success = settings.success
        self.rng = rng
        self.watchdog = watchdog
        self.fixed_end = end_at
        self.clock = clock
        self.now = clock()
        self.ep = select.epoll()
        self.conns: dict[int, Connection] = {}
        self.deadlines = Deadlines()
        self.ready: deque[Client] = deque()
        self.renewed: list[Client] = []  # closed loop: kept connections, next requests due
        self.clients = [Client(i) for i in range(bounds.concurrency)]
        self.issued = 0
        self.issue_cap = bounds.requests or math.inf  # --requests: no more are issued
        self.in_flight = 0
        self.concurrency = bounds.concurrency
        self.paused = False
        self.schedule: load.Schedule | None = None  # open loop, from the start of the load
        # Closed loop with one target: a client may keep its connection between
        # requests (Responses._response_done) while nothing stops or pauses the load.
        self.one_closed = len(self.targets) == 1 and not bounds.rate
        self.keeping = self.one_closed
        self.waker: Any = None  # open loop: a timerfd that wakes the loop at intended times
        self.free: list[Client] = []  # open loop: clients waiting to carry a request
        self.max_outstanding = bounds.max_outstanding
        self.index = shared.worker
        self.injector = Injector([], self.index)
        self.inject_requests = False  # a per-request fault is in force (hot-path check)
        self.fault_gen = -1
        self.dead_ends = cx.DeadEnds()
        self.leaked: list[Any] = []  # sockets kept open by the `leak` fault, on purpose
        self._sync_faults(self.now)
        self.reserve = Reserve()  # before the baseline: it is part of it
        self.registry = Registry()
        self.registry.take_baseline()
        self.report = report  # where audit reports go (the worker process writes files)
        self.audits = 0
        self.stopping = False
        self.stop_requested = False
        self.started_at = self.end_at = self.finished_at = 0.0
        self.issue_end = 0.0  # when this worker stopped issuing requests
        self.load_end_times: tuple[float, float] | None = None  # (last ok, last fail) then

    def _count_injected(self, kind: str) -> None:
        self.s[st.INJECTED[kind]] += 1

    def _count_error(self, phase: str, name: str, sent: bool) -> None:
        """A request failure by name: ``failed.<name>`` if it was sent, else ``unsent.<name>``."""
        self.s[(st.FAILED if sent else st.UNSENT)[name]] += 1
        self.s[st.PHASE[phase]] += 1

    # Connections ----------------------------------------------------------------
    def _connect(self, target: Target, owner: Client | None) -> None:
        """Start a handshake; ``owner`` gets the connection, else it refills the pool."""
        self.s[st.CONN_ATTEMPTED] += 1
        try:
            sock = cx.open_socket(target.family)
        except OSError as exc:
            self._connect_error(target, owner, oserror_name(exc))
            return
        conn = Connection(sock, target.index, self.s)
        conn.owner = owner
        addr = target.addr
        if self.injector.any:
            fault = self.injector.on_connection("connect_fail", target.index, self.now)
            if fault is not None:  # really connect somewhere that refuses or stays silent
                self._count_injected("connect_fail")
                conn.injected = "connect_fail"
                mode = "refusing" if fault.param == 0 else "silent"
                addr = self.dead_ends.address(target.family, mode)
        err = cx.start_connect(sock, addr)
        if err and err != errno.EINPROGRESS:
            sock.close()
            conn.fire("close")
            self._connect_error(target, owner, errno_name(err), conn.injected)
            return
        self.conns[conn.fd] = conn
        conn.inode = inode_of(conn.fd)
        self.ep.register(conn.fd, _OUT)
        self.deadlines.arm(conn, self.now + self.settings.connect_timeout)

    def _connect_ready(self, conn: Connection) -> None:
        err = cx.connect_result(conn.sock)
        if err == errno.EINPROGRESS:
            return  # spurious wakeup; the handshake is still going
        if err:
            self._connect_failed(conn, errno_name(err))
            return
        self.deadlines.disarm(conn)
        self.ep.modify(conn.fd, _IN)
        conn.fire("connected")
        self.s[st.CONN_CREATED] += 1
        owner: Client | None = conn.owner
        conn.owner = None
        pool = self.targets[conn.target].pool
        waiter = pool.connected(conn, self.now, owner is not None, self.rng.random())
        if owner is not None:
            self._dispatch(owner, conn)
        elif waiter is not None:
            self.deadlines.disarm(waiter)
            self._dispatch(waiter, conn)

    def _connect_failed(self, conn: Connection, name: str) -> None:
        conn.fire("close")
        self.deadlines.disarm(conn)
        del self.conns[conn.fd]
        conn.sock.close()
        self._connect_error(self.targets[conn.target], conn.owner, name, conn.injected)

    def _connect_error(
        self, target: Target, owner: Client | None, name: str, injected: str = ""
    ) -> None:
        target.pool.connect_failed(self.now)
        if owner is not None:
            self._fail(owner, "connect", name, injected, sent=False)
        else:  # a refill failed: a connection error, no request was lost
            self.s[st.CONNECT_ERROR[name]] += 1
            self.s[st.PHASE["connect"]] += 1

    def _close(self, conn: Connection, reason: str, refill: bool = True) -> None:
        """Close ``conn`` and forget it; ``reason`` is counted as an eviction ('' = none).

        ``refill`` False: the caller hands the freed slot to a request itself (a fresh
        connection for a re-send), so the warm-pool refill must not take it first.

        Idempotent: a connection is open while the fd map points at it (a DRAINING
        connection reaches CLOSED through the table before its socket is closed here).
        """
        if self.conns.get(conn.fd) is not conn:
            return
        if conn.state is cx.RESERVED and conn.owner is not None:
            conn.owner.conn = None  # its (delayed) request looks for another connection
        if conn.state is not cx.CLOSED:
            conn.fire("close")
        self.deadlines.disarm(conn)
        del self.conns[conn.fd]
        self.registry.closed(conn, conn.inode, reason or "shutdown", self.now)
        target = self.targets[conn.target]
        if self.injector.any and not self.stopping and self._leak(conn):
            pass  # forgotten by the pool, but its descriptor stays open
        else:
            conn.sock.close()
        target.pool.discard(conn)
        if reason:
            self.s[st.EVICT[reason]] += 1
        if not self.stopping:
            waiter = target.pool.serve_waiter(self.now)
            if waiter is not None:
                self.deadlines.disarm(waiter)
                self._connect(target, waiter)
            if refill:
                self._refill(target)  # a warm pool replaces what it lost at once (if no backoff)

    def _refill(self, target: Target) -> None:
        for _ in range(target.pool.refill(self.now)):
            self._connect(target, None)

    # Housekeeping -----------------------------------------------------------------
    def _tick(self, now: float) -> None:
        if self.watchdog is not None:
            self.watchdog(self)
        self._apply_control()
        self._sync_faults(now)
        wanted = self.shared.wctrl[shm.C_AUDIT]
        if wanted != self.audits and self.report is not None:
            self.audits = wanted
            self.run_audit(f"seq{wanted}")
        if self.injector.any and not self.stopping:
            self._inject_idle(now)
        if not self.stopping:
            for target in self.targets:
                for conn, reason in target.pool.sweep(now):
                    self._close(conn, reason)
                self._refill(target)
        self._publish(pool_gauges=not self.stopping)  # a drain keeps the gauges it recorded

    def _sync_faults(self, now: float) -> None:
        """Pick up a new fault table (within one tick of the supervisor writing it)."""
        if self.shared.fault_generation() == self.fault_gen:
            return
        got = self.shared.read_faults()
        if got is not None:  # None: being written right now; next tick
            self.fault_gen, faults = got
            self.injector = Injector(faults, self.index, previous=self.injector)
            self.inject_requests = self.injector.requests

    def _inject_idle(self, now: float) -> None:
        """half_open / close_idle: each idle connection draws once per fault table."""
        for target in self.targets:
            for conn in list(target.pool.idle):
                if conn.drawn == self.fault_gen or conn.injected:
                    continue
                conn.drawn = self.fault_gen
                if self.injector.on_connection("half_open", target.index, now):
                    self._count_injected("half_open")
                    conn.injected = "half_open"
                    self.ep.modify(conn.fd, 0)  # the peer is "gone": nothing arrives, not even FIN
                elif self.injector.on_connection("close_idle", target.index, now):
                    self._count_injected("close_idle")
                    conn.injected = "close_idle"
                    cx.shut(conn.sock)  # behind the pool's back; the loop finds out for real

    def _leak(self, conn: Connection) -> bool:
        """leak: keep the socket open but out of every registry (the FD audit must see it)."""
        if not self.injector.on_connection("leak", conn.target, self.now):
            return False
        self._count_injected("leak")
        self.ep.unregister(conn.fd)
        self.leaked.append(conn.sock)
        return True

    def _apply_control(self) -> None:
        """Follow the supervisor's runtime settings (0 = keep what we started with)."""
        paused = self.shared.paused()
        if self.schedule is not None and self.paused and not paused:
            self.schedule.change_rate(self.schedule.rate, self.now)  # nothing owed for the pause
        self.paused = paused
        self.keeping = self.one_closed and not paused and not self.stopping
        row = self.shared.wctrl
        rate = row[shm.C_RATE] / 1000.0  # the total: every worker takes its share (Schedule)
        n = row[shm.C_WORKERS]
        sched = self.schedule
        if (
            sched is not None
            and rate
            and self.index < n
            and (rate, n) != (sched.rate, sched.stride)
        ):
            sched.change_rate(rate, self.now, stride=n, phase=self.index)
        concurrency = row[shm.C_CONCURRENCY]
        if concurrency and concurrency != self.concurrency:
            self._set_concurrency(concurrency)
        if n and n != self.workers_seen:  # the workers were rescaled: take our new share
            self.workers_seen = n
            for target in self.targets:
                size = load.split(target.total[0], n)[self.index] if target.total[0] else 0
                minimum = load.split(target.total[1], n)[self.index] if target.total[0] else 0
                s = target.pool.settings
                if size and (size, minimum) != (s.max_size, s.min_size):
                    for conn in target.pool.resize(size, min(minimum, size)):
                        self._close(conn, "resized")

    def _set_concurrency(self, n: int) -> None:
        """Add clients, or let the surplus retire after their current request."""
        active = [c for c in self.clients if c.state is not load.DONE and not c.retire]
        for _ in range(n - len(active)):
            client = Client(len(self.clients))
            self.clients.append(client)
            self.ready.append(client)
        for client in active[n:]:
            client.retire = True
        self.concurrency = n

    def run_audit(self, label: str) -> dict[str, Any]:
        """Audit this process's descriptors now; publish the verdict and hand over the report."""
        infra = {0, 1, 2, *self.dead_ends.fds()}
        if not self.ep.closed:
            infra.add(self.ep.fileno())
        names = [t.spec.name for t in self.targets]

        def look() -> dict[str, Any]:
            args = (self.conns, infra, len(self.dead_ends.sockets), self.registry, names)
            return audit(*args, self.clock(), self.settings.connect_timeout)

        rep: dict[str, Any]
        try:
            rep = self._with_room(look)
        except (OSError, psutil.Error) as exc:  # the audit must never take its worker down
            why = oserror_name(exc) if isinstance(exc, OSError) else type(exc).__name__
            rep = incomplete(self.registry, len(self.conns), why)
        rep["worker"] = self.index
        rep["label"] = label
        s = self.s
        s[st.GAUGE_INDEX["fds.now"]] = max(rep["fds_now"], 0)
        s[st.GAUGE_INDEX["audit.leaked"]] = len(rep["leaked"])
        s[st.GAUGE_INDEX["audit.close_wait"]] = len(rep["close_wait"])
        report = self.report
        if report is not None:
            try:
                self._with_room(lambda: report(label, rep))
            except OSError:
                return rep  # no report: the supervisor says this worker did not answer
        s[st.GAUGE_INDEX["audit.seq"]] = self.audits  # last: the report is in place
        return rep

    def _with_room(self, act: Callable[[], Any]) -> Any:
        """``act()``; out of descriptors, again with the spare one handed back meanwhile
        (a report made then counts the spare as open: it is, but for the audit)."""
        try:
            return act()
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        with self.reserve.released():
            result = act()
        if isinstance(result, dict) and result.get("fds_now", -1) >= 0:
            result["fds_now"] += 1
            result["spare_used"] = True
        return result

    def _publish(self, pool_gauges: bool = True) -> None:
        """Write gauges and the heartbeat (plain stores: readers may see them any time)."""
        s = self.s
        if pool_gauges:
            totals = [0, 0, 0, 0]
            for target in self.targets:
                at = self.shared.targets[target.index] + shm.T_POOL
                for i, value in enumerate(target.pool.gauges()):
                    totals[i] += value
                    self.w[at + i] = value
            for name, value in zip(st.GAUGES, totals, strict=False):
                s[st.GAUGE_INDEX[name]] = value
        # Whether the pool recovered is a question about the load: the tail of a drain
        # (requests that time out after the load stopped) does not answer it.
        last_ok, last_fail = self.load_end_times or (
            max(t.last_ok for t in self.targets),
            max(t.last_fail for t in self.targets),
        )
        times = {
            "time.last_ok_us": last_ok,
            "time.last_fail_us": last_fail,
            "time.started_us": self.started_at,
            "time.end_us": self.end_at,
            "time.issue_end_us": self.issue_end,
            "time.finished_us": self.finished_at,
        }
        for name, seconds in times.items():
            s[st.GAUGE_INDEX[name]] = int(seconds * 1e6)
        s[st.GAUGE_INDEX["fds.baseline"]] = self.registry.baseline
        s[st.GAUGE_INDEX["fds.expected"]] = (
            self.registry.baseline + len(self.conns) + len(self.dead_ends.sockets)
        )
        s[st.HEARTBEAT] = int(self.clock() * 1_000_000)

    def _close_all(self) -> None:
        self.stopping = True  # nothing refills the pool from here on
        self.keeping = False
        for conn in list(self.conns.values()):
            if conn.state is not cx.CLOSED:
                self.s[st.SHUTDOWN] += 1
                self._close(conn, "")

    # The layers above implement these ------------------------------------------------
    def _acquire(self, client: Client) -> None:
        """Get ``client`` a connection as the pool decides, and send its request."""
        raise NotImplementedError

    def _dispatch(self, client: Client, conn: Connection) -> None:
        """Reserve ``conn`` for ``client`` and send its request."""
        raise NotImplementedError

    def _fail(
        self, client: Client, phase: str, name: str, injected: str = "", sent: bool = False
    ) -> None:
        """Count a failed request and let ``client`` go on."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"<Worker issued={self.issued} in_flight={self.in_flight} "
            f"conns={len(self.conns)} stopping={self.stopping}>"
        )
