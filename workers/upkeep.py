"""What a worker does every tick, off the request path.

Every :data:`workers.loop.eventloop.TICK`: the watchdog (is the supervisor alive, does it
want us to stop?); the supervisor's runtime settings (pause, rate, concurrency,
a new worker count and so a new pool share); a new fault table; an FD audit when
one was asked for; the faults that hit idle connections; the idle sweep and the
warm-pool refill; and the gauges and the heartbeat, published in the stats slot.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from workers.exchange.backlog import Backlog
from workers.exchange.dialer import Dialer
from workers.exchange.fdaudit import Reserve, audit, incomplete
from workers.loop import loadshape as load
from workers.loop.eventloop import Loop
from workers.loop.runstate import RunState
from workers.pool.client import DONE, Client
from workers.pool.sizing import Sizing, decide
from workers.pool.target import Target
from workers.shared import shm
from workers.shared import slotstats as st
from workers.shared.admission import SharedView
from workers.shared.errors import oserror_name
from workers.shared.injection import Injector

Report = Callable[[str, dict[str, Any]], None]


class Upkeep:
    """One worker's per-tick duties (see the module docstring).

    ``watchdog()`` returns True when the worker must stop (the worker process's:
    the supervisor died or asked); ``report(label, audit)`` takes audit reports."""

    __slots__ = (
        "also",
        "audits",
        "backlog",
        "connect_timeout",
        "dialer",
        "loop",
        "report",
        "reserve",
        "run",
        "s",
        "shared",
        "targets",
        "w",
        "watchdog",
        "workers_seen",
    )

    def __init__(
        self,
        run: RunState,
        loop: Loop,
        dialer: Dialer,
        targets: Sequence[Target],
        shared: SharedView,
        connect_timeout: float,
        watchdog: Callable[[], bool] | None,
        report: Report | None,
        backlog: Backlog,
    ) -> None:
        self.run = run
        self.backlog = backlog
        self.loop = loop
        self.dialer = dialer
        self.targets = targets
        self.shared = shared
        self.s = shared.slot
        self.w = shared.words
        self.connect_timeout = connect_timeout
        self.watchdog = watchdog
        self.report = report  # where audit reports go (the worker process writes files)
        self.also: list[Callable[[], None]] = []  # more duties, e.g. the lane's spin governor
        self.reserve = Reserve()  # a spare descriptor, for an audit out of descriptors
        self.audits = 0
        self.workers_seen = 0  # the worker count our pool shares were last split for

    def tick(self, now: float) -> None:
        run = self.run
        if self.watchdog is not None and self.watchdog():
            run.stop_requested = True
        self.apply_control()
        self.sync_faults()
        wanted = self.shared.wctrl[shm.C_AUDIT]
        if wanted != self.audits and self.report is not None:
            self.audits = wanted
            self.run_audit(f"seq{wanted}")
        if run.injector.any and not run.stopping:
            self.dialer.inject_idle(now)
        if not run.stopping:
            for target in self.targets:
                for conn, reason in target.pool.sweep(now):
                    self.dialer.close(conn, reason)
                if target.pool.settings.adaptive:
                    self._size(target, now)
                self.dialer.refill(target)
        self.publish(pool_gauges=not run.stopping)  # a drain keeps the gauges it recorded
        for duty in self.also:
            duty()

    def sync_faults(self) -> None:
        """Pick up a new fault table (within one tick of the supervisor writing it)."""
        run = self.run
        if self.shared.fault_generation() == run.fault_gen:
            return
        got = self.shared.read_faults()
        if got is not None:  # None: being written right now; next tick
            run.fault_gen, faults = got
            run.injector = Injector(faults, self.shared.worker, previous=run.injector)
            run.inject_requests = run.injector.requests

    def apply_control(self) -> None:
        """Follow the supervisor's runtime settings (0 = keep what we started with)."""
        run = self.run
        paused = self.shared.paused()
        if run.schedule is not None and paused and not run.paused:
            self.backlog.forgive(run.now)  # what was due before the pause: dropped, counted
        if run.schedule is not None and run.paused and not paused:
            run.schedule.change_rate(run.schedule.rate, run.now)  # nothing owed for the pause
            run.next_due = run.now
        run.paused = paused
        run.keeping = run.one_closed and not paused and not run.stopping
        row = self.shared.wctrl
        rate = row[shm.C_RATE] / 1000.0  # the total: every worker takes its share (Schedule)
        n = row[shm.C_WORKERS]
        me = self.shared.worker
        sched = run.schedule
        shards, shard = run.shards, run.shard  # n workers in each of the shards
        stride = shards * n
        if sched is not None and rate and me < n and (rate, stride) != (sched.rate, sched.stride):
            self.backlog.forgive(run.now)  # the old rate's backlog: dropped, counted
            sched.change_rate(rate, run.now, stride=stride, phase=shard + shards * me)
        concurrency = row[shm.C_CONCURRENCY]
        if concurrency and concurrency != run.concurrency:
            self._set_concurrency(concurrency)
        resized = False
        for target in self.targets:  # poolctl pool: new bounds for a target, in total
            bounds = self.shared.pool_bounds(target.index)
            if bounds[0] and bounds != target.total:
                target.total, resized = bounds, True
        if n and (n != self.workers_seen or resized):  # rescaled or resized: our new share
            self.workers_seen = n
            for target in self.targets:
                size = load.split(target.total[0], n)[me] if target.total[0] else 0
                minimum = load.split(target.total[1], n)[me] if target.total[0] else 0
                if size:
                    target.share = (size, minimum)
                    limit = min(size, target.sizing.limit) if target.sizing else size
                    self._limit(target, limit, min(minimum, limit))

    def _size(self, target: Target, now: float) -> None:
        """--pool-adaptive: the sizing rule's limit for this tick (workers.pool.sizing)."""
        pool = target.pool
        high, low = target.share
        low = max(1, min(low, high))
        before = target.sizing or Sizing(low)
        target.sizing = after = decide(before, now, len(pool.waiters), len(pool.idle), low, high)
        self._limit(target, after.limit, min(target.share[1], after.limit))

    def _limit(self, target: Target, limit: int, minimum: int) -> None:
        """Set the pool's limits: idle connections over a lower maximum are closed now
        (busy ones as they come back); a higher one serves the waiters at once."""
        pool = target.pool
        old = pool.settings.max_size
        if (limit, minimum) == (old, pool.settings.min_size):
            return
        for conn in pool.resize(limit, minimum):
            self.dialer.close(conn, "resized")
        if limit > old:
            self.dialer.serve_waiters(target)

    def _set_concurrency(self, n: int) -> None:
        """Add clients, or let the surplus retire after their current request."""
        run = self.run
        active = [c for c in run.clients if c.state is not DONE and not c.retire]
        for _ in range(n - len(active)):
            client = Client(len(run.clients))
            run.clients.append(client)
            run.ready.append(client)
        for client in active[n:]:
            client.retire = True
        run.concurrency = n

    def run_audit(self, label: str) -> dict[str, Any]:
        """Audit this process's descriptors now; publish the verdict and hand over the report."""
        dialer = self.dialer
        infra = {0, 1, 2, *dialer.dead_ends.fds()}
        if self.loop.fileno() >= 0:
            infra.add(self.loop.fileno())
        names = [t.spec.name for t in self.targets]

        def look() -> dict[str, Any]:
            args = (dialer.conns, infra, len(dialer.dead_ends.sockets), dialer.registry, names)
            return audit(*args, self.run.clock(), self.connect_timeout)

        rep: dict[str, Any]
        try:
            rep = self._with_room(look)
        except (OSError, psutil.Error) as exc:  # the audit must never take its worker down
            why = oserror_name(exc) if isinstance(exc, OSError) else type(exc).__name__
            rep = incomplete(dialer.registry, len(dialer.conns), why)
        rep["worker"] = self.shared.worker
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

    def publish(self, pool_gauges: bool = True) -> None:
        """Write gauges and the heartbeat (plain stores: readers may see them any time)."""
        s, run, dialer = self.s, self.run, self.dialer
        sched = run.schedule
        if pool_gauges:
            totals = [0, 0, 0, 0]
            for target in self.targets:
                at = self.shared.targets[target.index] + shm.T_POOL
                gauges = list(target.pool.gauges())
                if sched is not None:  # the open loop's due requests wait in the schedule
                    gauges[3] += sched.backlog(target.index, run.now, run.end_at)
                parked = min(self.loop.lane.parked, gauges[0]) if self.loop.lane else 0
                if parked:  # idle in the lane (open loop), in use to the pool
                    gauges[0], gauges[1] = gauges[0] - parked, gauges[1] + parked
                for i, value in enumerate(gauges):
                    totals[i] += value
                    self.w[at + i] = value
                self.w[self.shared.targets[target.index] + shm.T_POOL_LIMIT] = (
                    target.pool.settings.max_size
                )
            for name, value in zip(st.GAUGES, totals, strict=False):
                s[st.GAUGE_INDEX[name]] = value
        # Whether the pool recovered is a question about the load: the tail of a drain
        # (requests that time out after the load stopped) does not answer it.
        last_ok, last_fail = run.load_end_times or (
            max(t.last_ok for t in self.targets),
            max(t.last_fail for t in self.targets),
        )
        times = {
            "time.last_ok_us": last_ok,
            "time.last_fail_us": last_fail,
            "time.started_us": run.started_at,
            "time.ready_us": run.ready_at,
            "time.warmup_us": run.warmup_at,
            "time.end_us": run.end_at,
            "time.issue_end_us": run.issue_end,
            "time.finished_us": run.finished_at,
        }
        for name, seconds in times.items():
            s[st.GAUGE_INDEX[name]] = int(seconds * 1e6)
        if not run.issue_end or run.now <= run.issue_end:  # until it stopped issuing
            run.busy_s = self.loop.busy()
        s[st.GAUGE_INDEX["load.busy_us"]] = int(run.busy_s * 1e6)
        baseline = dialer.registry.baseline
        s[st.GAUGE_INDEX["fds.baseline"]] = baseline
        s[st.GAUGE_INDEX["fds.expected"]] = (
            baseline + len(dialer.conns) + len(dialer.dead_ends.sockets)
        )
        s[st.HEARTBEAT] = int(run.clock() * 1_000_000)

    def __repr__(self) -> str:
        return f"<Upkeep audits={self.audits} workers_seen={self.workers_seen}>"
