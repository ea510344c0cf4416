"""The supervisor: forks the workers, keeps them alive, serves the control socket.

Theory of operation.  One thread, one selector loop (signal wakeup pipe, control
socket and its clients), ticking every ``TICK`` (5 ms):

* Signal handlers only record the signal; the loop acts on it (gunicorn's
  arbiter).  First SIGINT/SIGTERM: drain (command word + SIGTERM to each worker,
  SIGKILL after the drain timeout).  Second SIGINT: kill now.  SIGCHLD makes the
  loop reap with non-blocking waitpids; a safety poll runs every ``REAP_POLL``.
  (Process sentinels are not used: a worker closes every inherited descriptor,
  the sentinel pipe's write end included.)
* Each worker lives in a slot whose lifecycle is a table (:mod:`poolsvc.arbiter.slots`):
  STARTING, RUNNING, RESTARTING, RETIRING, REVIVING, RETIRED, DONE.  A worker
  that exits 0 has finished (or was retired by a scale-down); its slot stays as
  it left it.  Any other exit is a crash: its counts are folded into RETIRED
  (totals never go backwards), its slot is zeroed, and what happens next is
  :func:`poolsvc.arbiter.slots.after_exit`'s decision: a replacement forked into the same
  slot after a backoff, with the rest of the shard's request bound and the same
  end time; or nothing, when the shard is done; or, after ``MAX_BOOT_FAILURES``
  boot failures in a row, the service stops (exit 3).
* Each tick the breaker desk (:mod:`poolsvc.arbiter.breakerdesk`) reads the workers'
  counters and writes the breaker rows; each second the per-interval figures
  are recorded (:mod:`poolsvc.metrics.intervals`).
* Runtime changes (concurrency, pause, worker count) are written into the
  workers' control rows; workers apply them on their next tick (100 ms). A new
  worker count is :func:`poolsvc.arbiter.slots.scale_moves`'s decision.
* The control commands (:mod:`poolsvc.ctl.commands`) see the supervisor as a
  :class:`poolsvc.ctl.service.Service` and show its :meth:`Supervisor.view`.

Every exit path, an exception here included, SIGKILLs and reaps whatever worker
is still alive (``finally``).  The shared region is anonymous memory: nothing to
unlink.  Workers that outlive a SIGKILLed supervisor notice within one tick.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from poolsvc.arbiter import readings
from poolsvc.arbiter.auditor import Auditor
from poolsvc.arbiter.breakerdesk import BreakerDesk
from poolsvc.arbiter.fleet import Fleet
from poolsvc.arbiter.signals import SignalBox
from poolsvc.arbiter.slots import DONE, RETIRED, Slot
from poolsvc.config import plan
from poolsvc.config.plan import RunPlan
from poolsvc.ctl import commands
from poolsvc.ctl.ctlserver import ControlServer, Deferred
from poolsvc.ctl.faultboard import FaultBoard
from poolsvc.ctl.httpmetrics import MetricsServer
from poolsvc.ctl.protocol import ControlError
from poolsvc.metrics import ledger
from poolsvc.metrics import outputs as files
from poolsvc.metrics.intervals import Interval, Intervals
from poolsvc.metrics.recording import Recording
from poolsvc.report import prometheus
from poolsvc.report import render as report
from poolsvc.report.render import RunInfo
from poolsvc.report.views import LoadView, TargetView, View
from workers.lane import fastpath as lane
from workers.pool.breaker import Breaker
from workers.shared import shm
from workers.shared import slotstats as stats
from workers.shared.errors import ConfigError

TICK: Final = 0.005
REAP_POLL: Final = 0.1
EXIT_BOOT_FAILURE: Final = 3
EXIT_INTERRUPTED: Final = 130
STOP_GRACE: Final = 0.5  # `stop`: how long workers get before SIGKILL
ENDED: Final = frozenset({DONE, RETIRED})  # a slot that will not run again by itself


class Supervisor:
    """Runs the plan ``run``; :meth:`run` returns the exit code.

    ``run.forever``: a service (``poolsvc serve``) that runs until drained or stopped.
    ``control``: where to serve the control socket (None: no socket).
    """

    def __init__(
        self,
        run: RunPlan,
        emit: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        control: Path | None = None,
        on_interval: Callable[[Interval], None] | None = None,
        on_second: Callable[[float, stats.Snapshot, list[stats.Snapshot]], None] | None = None,
    ) -> None:
        self.plan, self.seed, self.emit, self.clock = run, run.seed, emit, clock
        self.names = run.names
        self.hosts = [(t.spec.host, t.spec.port) for t in run.targets]
        self.forever = run.forever
        self.layout = shm.Layout(workers=plan.MAX_WORKERS, targets=len(run.targets))
        self.region = shm.Region(self.layout, os.getpid())
        now = self.started_at = clock()
        self.started_wall = time.time()  # the same instant on the wall clock
        self.recording = Recording(now, len(self.names))
        self.on_second = on_second  # each second: seconds so far, the totals, each target's
        self.finished_at = 0.0
        self.run_clock = ledger.RunClock()
        self.desk = BreakerDesk(self.region, run.breaker, self.names, run.seed, emit, now)
        self.board = FaultBoard(self.region, emit, clock, list(run.faults))
        self.auditor = Auditor(
            self.region, self.hosts, emit, run.audit_every_s, run.audit_report, now
        )
        self.fleet = Fleet(
            run, self.region, emit, clock, self.auditor.reporter, self.run_clock.observe
        )
        self.final_audits: list[dict[str, Any]] = []
        self.intervals = Intervals(now)
        self.target_intervals = [Intervals(now) for _ in self.names]  # several targets only
        self.on_interval = on_interval
        self.rates: dict[int, tuple[float, int]] = {}
        self._next_second = now + 1.0
        self.sel = selectors.DefaultSelector()
        self.signals = SignalBox()
        self._reap_due = 0.0
        self.kill_at = 0.0
        self.exit_code = 0
        self.control = (
            ControlServer(control, self.sel, self._command, clock) if control is not None else None
        )
        try:
            self.metrics = (
                MetricsServer(run.metrics_addr, self.sel, self._exposition, clock)
                if run.metrics_addr is not None
                else None
            )
        except OSError as exc:
            if self.control is not None:
                self.control.close()
            host, port = run.metrics_addr or ("", 0)
            raise ConfigError(f"metrics_addr {host}:{port}: {exc.strerror or exc}") from None

    @property
    def slots(self) -> list[Slot]:
        return self.fleet.slots

    @property
    def stopping(self) -> bool:
        return self.fleet.stopping

    @property
    def breakers(self) -> list[Breaker]:
        return self.desk.breakers

    @property
    def last_audit(self) -> dict[str, Any] | None:
        return self.auditor.last

    def live(self) -> list[Slot]:
        return self.fleet.live()

    # lifecycle --------------------------------------------------------------------------
    def run(self) -> int:
        self.signals.install(self.sel)
        try:
            self.auditor.run_dir = files.run_dir()
            while any(s.state not in ENDED for s in self.slots):
                self._step()
            self.finished_at = self.clock()
            final = self.snapshot()
            self.run_clock.observe(final.gauges)
            self.run_clock.finish(self.finished_at)
            last = self.intervals.add(self.finished_at, final, last=True)  # the partial last one
            if last is not None and self.on_interval is not None:
                self.on_interval(last)
            self._record(self.finished_at, final)
            if self.on_second is not None:
                self.on_second(self.finished_at - self.started_at, final, self._owns(final))
            self.final_audits = self.auditor.finals([s.index for s in self.slots])
            self._linger()
            return self.exit_code
        finally:
            if self.metrics is not None:
                self.metrics.close()
            self.fleet.kill_all()
            if self.auditor.run_dir:
                shutil.rmtree(self.auditor.run_dir, ignore_errors=True)
            self.signals.restore()
            if self.control is not None:
                self.control.close()
            self.sel.close()

    def _step(self) -> None:
        busy = self.control is not None and self.control.backlog
        for key, mask in self.sel.select(0 if busy else TICK):
            key.data(mask)
        if self.control is not None:
            self.control.service()
        self._on_signals()
        now = self.clock()
        if now >= self._reap_due:
            self._reap_due = now + REAP_POLL
            self.fleet.reap_exited()
        if self.fleet.failed_boot and not self.stopping:
            self.exit_code = EXIT_BOOT_FAILURE
            self.drain()
        self.fleet.fork_due(now)
        if self.board.faults:
            self.board.expire(now)
        live = self.live()
        self.desk.tick(now, [s.index for s in self.slots], [s.index for s in live])
        self.auditor.step(now, {s.index for s in live})
        if not self.fleet.measuring:
            self._watch_warmup(now)
        snap = None
        if now >= self._next_second:
            self._next_second = now + 1.0
            snap = self._every_second(now)
        if self.fleet.measuring and self.recording.due(now):  # one read, if the second's is due
            self._record(now, snap or self.snapshot())
        if self.stopping and self.kill_at and now >= self.kill_at:
            self.fleet.kill_all()

    def _watch_warmup(self, now: float) -> None:
        """``--warmup``: the per-second figures and the recording begin with the measured
        period, the first step after a worker publishes its start (its warm-up sealed):
        the warm-up's seconds are no rows of the run, its counts are apart."""
        started = stats.GAUGE_INDEX["time.started_us"]
        if not any(self.region.slot(s.index)[started] for s in self.slots):
            return
        self.fleet.measuring = True
        self.recording = Recording(now, len(self.names))
        self.intervals = Intervals(now)
        self.target_intervals = [Intervals(now) for _ in self.names]

    def _every_second(self, now: float) -> stats.Snapshot:
        """The cheap audit, the per-second figures, the worker rates; the totals read."""
        self.auditor.cheap(now, [(s.index, s.pids[-1], s.shard.concurrency) for s in self.live()])
        snap = self.snapshot()
        self.run_clock.observe(snap.gauges)
        interval = self.intervals.add(now, snap) if self.fleet.measuring else None
        if interval is not None and self.on_interval is not None:
            self.on_interval(interval)
        owns = self._owns(snap)
        if len(self.names) > 1 and self.fleet.measuring:
            for intervals, own in zip(self.target_intervals, owns, strict=True):
                intervals.add(now, own)
        if self.on_second is not None:
            self.on_second(now - self.started_at, snap, owns)
        for slot in self.slots:
            total = self.region.slot(slot.index)[stats.REQ_SENT] + slot.sent_before
            last_t, last = self.rates.get(slot.index, (now, total))
            self.rates[slot.index] = (now, total)
            slot.rps = (total - last) / (now - last_t) if now > last_t else 0.0
        if self.control is not None:
            self.control.sweep(now)
        if self.metrics is not None:
            self.metrics.sweep(now)
        return snap

    def _exposition(self, openmetrics: bool) -> str:
        return prometheus.exposition(self.view(), openmetrics)

    def _linger(self) -> None:
        """After the run: keep answering scrapes (and poolctl) for ``linger_s``, so the
        final figures can be scraped; a signal ends it early."""
        if self.metrics is None or self.plan.linger_s <= 0:
            return
        end = self.clock() + self.plan.linger_s
        self.emit(
            f"[pool] run over: {self.metrics.url} stays up {self.plan.linger_s:g}s"
            " for a final scrape (Ctrl-C ends it)"
        )
        while (now := self.clock()) < end:
            for key, mask in self.sel.select(min(0.1, end - now)):
                key.data(mask)
            if self.control is not None:
                self.control.service()
            if any(signum != signal.SIGCHLD for signum in self.signals.take()):
                return
            self.metrics.sweep(self.clock())

    def _owns(self, snap: stats.Snapshot) -> list[stats.Snapshot]:
        return readings.own_snapshots(self.region, self.slots, len(self.names), snap)

    def _record(self, now: float, snap: stats.Snapshot) -> None:
        """A row of the run's recording (the HTML report's and the JSON result's timeline)."""
        states = [b.state for b in self.breakers]
        self.recording.add(now, snap, states, [f.kind for f in self.board.faults])

    def _command(self, cmd: str, args: dict[str, Any]) -> Any:
        return commands.dispatch(self, cmd, args)

    def _on_signals(self) -> None:
        for signum in self.signals.take():
            if signum == signal.SIGCHLD:
                self._reap_due = 0.0  # reap on this step
            elif not self.stopping:
                self.emit(f"[pool] {signal.Signals(signum).name}: draining")
                self.drain()
            elif signum == signal.SIGINT:
                self.emit("[pool] second SIGINT: stopping now")
                self.exit_code = EXIT_INTERRUPTED
                self.fleet.kill_all()

    # the service's commands ----------------------------------------------------------------
    def drain(self) -> None:
        """Stop issuing requests everywhere; SIGKILL whatever has not exited in time."""
        self._stop_all(self.plan.drain_timeout_s + 2.0)

    def stop(self) -> None:
        """Stop now: workers get ``STOP_GRACE`` to close cleanly, then SIGKILL."""
        self._stop_all(STOP_GRACE)

    def _stop_all(self, grace: float) -> None:
        if self.stopping:
            self.kill_at = min(self.kill_at, self.clock() + grace)
            return
        self.region.send_command(shm.CMD_DRAIN)
        self.fleet.stop_all()
        self.kill_at = self.clock() + grace

    def set_concurrency(self, total: int) -> None:
        self.fleet.set_concurrency(total)

    def set_rate(self, total: float) -> None:
        self.fleet.set_rate(total)

    def set_pool(self, targets: list[int], size: int, minimum: int | None) -> None:
        self.fleet.set_pool(targets, size, minimum)

    def scale(self, n: int) -> None:
        self.fleet.scale(n)

    def set_paused(self, paused: bool) -> None:
        self.region.words[shm.H_PAUSED] = int(paused)

    def paused(self) -> bool:
        return bool(self.region.words[shm.H_PAUSED])

    def breaker_action(self, target: int, action: str) -> None:
        if not self.plan.breaker.enabled:
            raise ControlError("conflict", "the breaker is off (--no-breaker): nothing to force")
        try:
            self.desk.action(target, action, self.clock())
        except ValueError as exc:
            raise ControlError("bad_request", str(exc)) from None

    def audit_now(self) -> Deferred:
        """For the control socket: a reply that comes when the audit is done."""
        live = self.live()
        if not live:
            raise ControlError("conflict", "no live worker to audit")
        deferred = Deferred()
        self.auditor.start([s.index for s in live], self.clock(), deferred.resolve)
        return deferred

    # the read side -------------------------------------------------------------------------
    def snapshot(self) -> stats.Snapshot:
        """Totals: every used slot plus the retired block (lock-free reads)."""
        return readings.totals(self.region, self.slots)

    def breaker_status(self) -> list[dict[str, Any]]:
        return self.desk.status(self.clock())

    def per_worker(self) -> list[dict[str, Any]]:
        return readings.per_worker(self.region, self.slots)

    def per_target(
        self, snap: stats.Snapshot | None = None, owns: list[stats.Snapshot] | None = None
    ) -> list[dict[str, Any]]:
        whole = snap or self.snapshot()
        owns = owns or readings.own_snapshots(self.region, self.slots, len(self.names), whole)
        return readings.per_target(self.region, self.slots, self.names, self.breakers, owns)

    def view(self) -> View:
        """The service now, as one read (the control commands render it)."""
        now = self.clock()
        snap = self.snapshot()
        several = len(self.names) > 1
        owns = readings.own_snapshots(self.region, self.slots, len(self.names), snap)
        figures = self.per_target(snap, owns)
        live = self.live()
        targets = []
        for t, brk in enumerate(self.breaker_status()):
            own = owns[t]
            latest = (self.target_intervals[t] if several else self.intervals).latest()
            pool = readings.pool(self.region, live, t)
            pool["max"], pool["min"] = self.fleet.pool_totals[t]  # the bounds, all workers
            targets.append(
                TargetView(brk["target"], brk, pool, figures[t], latest, own.errors(), own)
            )
        fleet = self.fleet
        return View(
            pid=os.getpid(),
            mode="serve" if self.forever else "run",
            state=self._state(snap),
            uptime_s=round(now - self.started_at, 3),
            seed=self.seed,
            control=str(self.control.path) if self.control else None,
            metrics=self.metrics.url if self.metrics else None,
            snapshot=snap,
            info=self.run_info(),
            interval=self.intervals.latest(),
            targets=targets,
            workers=readings.slot_views(self.region, self.slots, now),
            load=LoadView(
                "open" if fleet.total_rate else "closed",
                fleet.total_rate or None,
                fleet.total_concurrency,
                self.paused(),
                len(live),
            ),
            injection=self.board.describe(),
        )

    def _state(self, snap: stats.Snapshot) -> str:
        if not self.run_clock.started:
            self.run_clock.observe(snap.gauges)  # the measured load may have begun
        if self.stopping:
            return "stopping"
        if self.paused():
            return "paused"
        return "warming up" if self.plan.warmup_s and not self.run_clock.started else "running"

    def run_info(self, embedded: bool = False) -> RunInfo:
        """What was run and for how long, as the supervisor measured it (live or final)."""
        now = self.clock()
        clock = self.run_clock
        if not clock.started:
            clock.observe(self.snapshot().gauges)
        return RunInfo(
            ", ".join(self.names),
            embedded,
            self.fleet.total_concurrency,
            self.plan.pool_size,
            clock.elapsed_s(now),
            self.seed,
            len(self.live()) or len(self.slots),
            self.fleet.total_rate,
            load_s=clock.load_s(now),
            drain_s=clock.drain_s(),
            breaker=self.plan.breaker.enabled,
            tls_resume_ratio=self.plan.tls_resume_ratio,
            started_at=self.started_wall,
            shard=self._shard_info(),
            warmup=self._warmup_info(),
            path=lane.choose([t.spec for t in self.plan.targets], self.plan.rate),
        )

    def _warmup_info(self) -> dict[str, Any] | None:
        """``--warmup``: its figures, apart from the measured ones."""
        seconds = self.plan.warmup_s
        if not seconds:
            return None
        return report.warmup_metrics(readings.warmup(self.region, self.slots), seconds)

    def _shard_info(self) -> dict[str, Any]:
        """This instance's place in the run, and how late it was ready (``--start-at``)."""
        plan, g = self.plan, self.snapshot().gauges
        skew = None
        if plan.start_at and g["time.ready_us"] and g["time.started_us"]:
            skew = round((g["time.ready_us"] - g["time.started_us"]) / 1000, 3)
        return {
            "index": plan.instance.index,
            "count": plan.instance.count,
            "run_id": plan.run_id,
            "start_at": plan.start_at or None,
            "start_skew_ms": skew,
        }

    def __repr__(self) -> str:
        return f"<Supervisor {self.fleet!r} {self.desk} exit={self.exit_code}>"
